//! Serving the UI's static files (the npm package's `ui/dist` folder) under a path of the server.
//!
//! The UI uses relative asset URLs and hash routing, so any prefix works as long as the page is
//! reached with its trailing slash; `<prefix>` alone redirects there.

use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::engineio::error::Body;

/// The UI's files in `dir`, served at `prefix` (e.g. `/admin-ui`).
#[derive(Debug, Clone)]
pub struct StaticFiles {
    dir: PathBuf,
    prefix: String,
}

impl StaticFiles {
    /// Files of `dir` at `prefix` (a trailing slash is ignored).
    pub fn new(dir: impl Into<PathBuf>, prefix: &str) -> Self {
        Self {
            dir: dir.into(),
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// Whether `path` is under the prefix (what [`StaticFiles::serve`] answers).
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Answers a GET for `path`: the file, a redirect to the prefix with its slash, or 404.
    pub async fn serve(&self, path: &str) -> Response<Body> {
        let Some(rest) = path.strip_prefix(self.prefix.as_str()) else {
            return status(StatusCode::NOT_FOUND);
        };
        if rest.is_empty() {
            let mut res = status(StatusCode::MOVED_PERMANENTLY);
            if let Ok(location) = HeaderValue::from_str(&format!("{}/", self.prefix)) {
                res.headers_mut().insert(header::LOCATION, location);
            }
            return res;
        }
        let file = match rest.trim_start_matches('/') {
            "" => "index.html",
            file => file,
        };
        // Plain names only: no `..`, no hidden files, nothing outside the folder.
        let safe = file.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
        if !safe {
            return status(StatusCode::NOT_FOUND);
        }
        match tokio::fs::read(self.dir.join(file)).await {
            Ok(bytes) => {
                let mut res = Response::new(Full::new(Bytes::from(bytes)));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type(file)),
                );
                res
            }
            Err(err) => {
                tracing::debug!(file, %err, "admin ui file unavailable");
                status(StatusCode::NOT_FOUND)
            }
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut res = Response::new(Body::default());
    *res.status_mut() = code;
    res
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "application/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "map" | "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching() {
        let files = StaticFiles::new("/nowhere", "/admin-ui/");
        assert!(files.matches("/admin-ui"));
        assert!(files.matches("/admin-ui/"));
        assert!(files.matches("/admin-ui/js/app.js"));
        assert!(!files.matches("/admin-uix"));
        assert!(!files.matches("/"));
    }

    #[tokio::test]
    async fn serves_files_redirects_and_refuses_escapes() {
        let dir = std::env::temp_dir().join(format!("tidings-admin-ui-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("js")).unwrap();
        std::fs::write(dir.join("index.html"), "<html>").unwrap();
        std::fs::write(dir.join("js/app.js"), "1").unwrap();
        let files = StaticFiles::new(&dir, "/admin-ui");
        let res = files.serve("/admin-ui").await;
        assert_eq!(res.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(res.headers()[header::LOCATION], "/admin-ui/");
        let res = files.serve("/admin-ui/").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let res = files.serve("/admin-ui/js/app.js").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/javascript; charset=utf-8"
        );
        for bad in [
            "/admin-ui/../Cargo.toml",
            "/admin-ui/js/../../x",
            "/admin-ui/.env",
            "/admin-ui/missing.js",
        ] {
            assert_eq!(
                files.serve(bad).await.status(),
                StatusCode::NOT_FOUND,
                "{bad}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

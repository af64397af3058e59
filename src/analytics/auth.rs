//! Who may see which organisation: HS256 tokens listing the organisations a dashboard may join.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims of a dashboard token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token was issued to (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The organisations the bearer may see.
    pub orgs: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// What a connected socket may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Development mode: no secret configured, every organisation.
    Any,
    /// Only these organisations.
    Orgs(HashSet<String>),
}

impl Grant {
    /// Whether organisation `org` may be joined.
    pub fn allows(&self, org: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Orgs(orgs) => orgs.contains(org),
        }
    }
}

/// Verifies tokens with a shared secret.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for HS256 tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The grant of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<Grant, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| e.to_string())?;
        Ok(Grant::Orgs(data.claims.orgs.into_iter().collect()))
    }
}

/// Signs a token (for tests, demos and operators' tooling).
pub fn sign(secret: &[u8], claims: &Claims) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn accepts_valid_and_refuses_forged_or_expired_tokens() {
        let claims = Claims {
            sub: None,
            orgs: vec!["acme".into()],
            exp: now() + 60,
        };
        let token = sign(b"s3cret", &claims).unwrap();
        let grant = Verifier::new(b"s3cret").verify(&token).unwrap();
        assert!(grant.allows("acme"));
        assert!(!grant.allows("globex"));
        assert!(Verifier::new(b"other").verify(&token).is_err());
        let expired = sign(
            b"s3cret",
            &Claims {
                exp: now() - 10,
                ..claims
            },
        )
        .unwrap();
        assert!(Verifier::new(b"s3cret").verify(&expired).is_err());
        assert!(Verifier::new(b"s3cret").verify("not.a.token").is_err());
    }
}

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
    /// Expiry, seconds since the Unix epoch. A connected socket is disconnected when it passes.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch: the token is refused until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
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

/// What a valid token grants, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The organisations it grants.
    pub grant: Grant,
    /// When it expires, in seconds since the Unix epoch.
    pub exp: u64,
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
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The grant of a valid token that is neither expired nor before its `nbf`.
    pub fn verify(&self, token: &str) -> Result<Verified, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| e.to_string())?;
        Ok(Verified {
            grant: Grant::Orgs(data.claims.orgs.into_iter().collect()),
            exp: data.claims.exp,
        })
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
            nbf: None,
        };
        let token = sign(b"s3cret", &claims).unwrap();
        let verified = Verifier::new(b"s3cret").verify(&token).unwrap();
        assert_eq!(verified.exp, claims.exp);
        let grant = verified.grant;
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

    #[test]
    fn refuses_a_token_before_its_nbf() {
        let claims = Claims {
            sub: None,
            orgs: vec!["acme".into()],
            exp: now() + 120,
            nbf: Some(now() + 60),
        };
        let early = sign(b"s3cret", &claims).unwrap();
        assert!(Verifier::new(b"s3cret").verify(&early).is_err());
        let ready = sign(
            b"s3cret",
            &Claims {
                nbf: Some(now() - 1),
                ..claims
            },
        )
        .unwrap();
        assert!(Verifier::new(b"s3cret").verify(&ready).is_ok());
    }
}

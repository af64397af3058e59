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

/// Why a dashboard's CONNECT was refused: a code for programs (`connect_error`'s `data.code`) and
/// a message for people (`err.message`), saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `auth.token`.
    Missing,
    /// Malformed, signed with another secret or algorithm, without `exp`, or before its `nbf`.
    Invalid(&'static str),
    /// Past its `exp`.
    Expired,
    /// The CONNECT names an organisation (`auth.organizationId`) the token does not grant.
    OrgForbidden(String),
}

impl Refusal {
    /// `token_missing`, `token_invalid`, `token_expired` or `org_forbidden`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Invalid(_) => "token_invalid",
            Self::Expired => "token_expired",
            Self::OrgForbidden(_) => "org_forbidden",
        }
    }

    /// What a person should know, and do.
    pub fn message(&self) -> String {
        match self {
            Self::Missing => "no token: connect with auth: {token} (`tidings token --org <id>` \
                              makes one)"
                .into(),
            Self::Invalid(why) => format!("invalid token: {why}"),
            Self::Expired => "the token has expired: get a new one".into(),
            Self::OrgForbidden(org) => format!("the token does not grant organisation {org}"),
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
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The grant of a valid token that is neither expired nor before its `nbf`.
    pub fn verify(&self, token: &str) -> Result<Verified, Refusal> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => Refusal::Expired,
                ErrorKind::ImmatureSignature => Refusal::Invalid("it is not valid yet (nbf)"),
                ErrorKind::InvalidSignature => {
                    Refusal::Invalid("it was not signed with this server's secret")
                }
                ErrorKind::InvalidAlgorithm => Refusal::Invalid("it is not signed with HS256"),
                ErrorKind::MissingRequiredClaim(_) => Refusal::Invalid("it has no exp claim"),
                ErrorKind::Json(_) => Refusal::Invalid("its claims are not {orgs, exp, nbf?}"),
                _ => Refusal::Invalid("it is not a well-formed JWT"),
            },
        )?;
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
        assert_eq!(
            Verifier::new(b"other").verify(&token).unwrap_err().code(),
            "token_invalid"
        );
        let expired = sign(
            b"s3cret",
            &Claims {
                exp: now() - 10,
                ..claims
            },
        )
        .unwrap();
        assert_eq!(
            Verifier::new(b"s3cret").verify(&expired),
            Err(Refusal::Expired)
        );
        assert_eq!(
            Verifier::new(b"s3cret")
                .verify("not.a.token")
                .unwrap_err()
                .code(),
            "token_invalid"
        );
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
        assert_eq!(
            Verifier::new(b"s3cret").verify(&early),
            Err(Refusal::Invalid("it is not valid yet (nbf)"))
        );
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

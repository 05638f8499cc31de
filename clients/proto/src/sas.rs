//! Shared Access Signature tokens: making them (clients) and checking them (the hub).
//!
//! Wire rules (wire-spec A.2–A.4): the signature is HMAC-SHA256 over the `sr` text *exactly as it appears in
//! the token* + `"\n"` + the `se` text. The SDKs encode `sr` differently (Node leaves a service `sr` raw, Node
//! device tokens write `*` as `%2a`, Python uses upper-case hex), and each signs what it sends, so the verifier
//! must never re-encode `sr`. Fields may come in any order; `sig` is percent-decoded without turning `+` into a
//! space, and may carry a literal `/` (Python service SDK).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The literal that starts every token.
pub const TOKEN_PREFIX: &str = "SharedAccessSignature ";

/// Longest token text we parse; real tokens are a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Characters left unencoded in `sr`, as Python's `quote(safe="")` does: RFC 3986 unreserved.
const SR_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why a token could not be parsed. The hub answers all of these with the same 401; the detail is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasParseError {
    /// The text does not start with [`TOKEN_PREFIX`].
    #[error("token does not start with 'SharedAccessSignature '")]
    MissingPrefix,
    /// The text is longer than [`MAX_TOKEN_LEN`].
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// `sr`, `sig` or `se` is absent or empty; holds the field name.
    #[error("token field '{0}' is missing")]
    MissingField(&'static str),
    /// A field appears more than once; holds the field name.
    #[error("token field '{0}' appears more than once")]
    DuplicateField(&'static str),
    /// A field is malformed, e.g. `se` not a number or `sig` not a base64 HMAC-SHA256; holds the field name.
    #[error("token field '{0}' is malformed")]
    Malformed(&'static str),
}

/// A parsed token. Keeps the raw `sr` and `se` texts because those, not their decoded forms, are what was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    raw_sr: String,
    raw_se: String,
    /// The decoded resource URI (`sr`), e.g. `myhub.azure-devices.net/devices/dev1`.
    pub resource: String,
    /// Expiry, seconds since the Unix epoch.
    pub expiry: u64,
    /// Policy name (`skn`), percent-decoded; `None` for tokens signed with a device key.
    pub key_name: Option<String>,
    signature: Vec<u8>,
}

impl SasToken {
    /// Parses `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]` with the fields in any order.
    pub fn parse(text: &str) -> Result<Self, SasParseError> {
        if text.len() > MAX_TOKEN_LEN {
            return Err(SasParseError::TooLong);
        }
        let body = text.strip_prefix(TOKEN_PREFIX).ok_or(SasParseError::MissingPrefix)?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for field in body.split('&') {
            let (name, value) = field.split_once('=').unwrap_or((field, ""));
            let slot = match name {
                "sr" => (&mut sr, "sr"),
                "sig" => (&mut sig, "sig"),
                "se" => (&mut se, "se"),
                "skn" => (&mut skn, "skn"),
                _ => continue, // unknown fields are tolerated, as the SDK parsers do
            };
            if slot.0.replace(value).is_some() {
                return Err(SasParseError::DuplicateField(slot.1));
            }
        }
        let raw_sr = sr.filter(|v| !v.is_empty()).ok_or(SasParseError::MissingField("sr"))?;
        let raw_sig = sig.filter(|v| !v.is_empty()).ok_or(SasParseError::MissingField("sig"))?;
        let raw_se = se.filter(|v| !v.is_empty()).ok_or(SasParseError::MissingField("se"))?;
        if !raw_se.bytes().all(|b| b.is_ascii_digit()) || raw_se.len() > 19 {
            return Err(SasParseError::Malformed("se"));
        }
        let expiry: u64 = raw_se.parse().map_err(|_| SasParseError::Malformed("se"))?;
        let resource = decode_component(raw_sr).ok_or(SasParseError::Malformed("sr"))?;
        let signature = decode_component(raw_sig)
            .and_then(|b64| BASE64.decode(b64.as_bytes()).ok())
            .filter(|bytes| bytes.len() == 32)
            .ok_or(SasParseError::Malformed("sig"))?;
        let key_name = match skn {
            Some(raw) => Some(decode_component(raw).filter(|n| !n.is_empty()).ok_or(SasParseError::Malformed("skn"))?),
            None => None,
        };
        Ok(Self { raw_sr: raw_sr.to_owned(), raw_se: raw_se.to_owned(), resource, expiry, key_name, signature })
    }

    /// True when the token was signed with `key` (raw key bytes). Constant-time in the signature.
    pub fn is_signed_with(&self, key: &[u8]) -> bool {
        let expected = signature_bytes(key, &self.raw_sr, &self.raw_se);
        expected.ct_eq(&self.signature).into()
    }

    /// True when the token has expired at `now` (seconds since the epoch): a token is valid strictly before `se`.
    pub fn is_expired_at(&self, now: u64) -> bool {
        self.expiry <= now
    }

    /// True when the token's resource covers `resource` (host-insensitive, compared by whole path segments:
    /// `host/devices` covers `host/devices/d1` but not `host/devicesX`).
    pub fn covers(&self, resource: &str) -> bool {
        resource_covers(&self.resource, resource)
    }
}

/// `scope` covers `target` when, compared case-insensitively, it equals it or is a prefix ending at a `/`.
pub fn resource_covers(scope: &str, target: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    if scope.is_empty() || scope.len() > target.len() {
        return false;
    }
    let (head, rest) = target.split_at(scope.len());
    head.eq_ignore_ascii_case(scope) && (rest.is_empty() || rest.starts_with('/'))
}

/// Percent-decodes one token component; `+` stays `+`. `None` when the result is not UTF-8.
fn decode_component(raw: &str) -> Option<String> {
    percent_decode_str(raw).decode_utf8().ok().map(|s| s.into_owned())
}

fn signature_bytes(key: &[u8], raw_sr: &str, raw_se: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(raw_sr.as_bytes());
    mac.update(b"\n");
    mac.update(raw_se.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Percent-encodes a resource URI for `sr` the way the Python SDK does (upper-case hex, unreserved kept).
pub fn encode_resource(resource: &str) -> String {
    utf8_percent_encode(resource, SR_ENCODE_SET).to_string()
}

/// Errors from making a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasSignError {
    /// The key is not valid base64.
    #[error("the shared access key is not valid base64")]
    InvalidKey,
}

/// Makes a token for `resource` (e.g. `host/devices/dev1`, or `host` for a service token) valid until `expiry`
/// (seconds since the epoch), signed with the base64 `key`; `key_name` adds `skn` for policy keys.
pub fn generate_token(
    resource: &str,
    key_b64: &str,
    key_name: Option<&str>,
    expiry: u64,
) -> Result<String, SasSignError> {
    let key = BASE64.decode(key_b64.as_bytes()).map_err(|_| SasSignError::InvalidKey)?;
    Ok(token_signed_with(resource, &key, key_name, expiry))
}

/// Makes a token the way Event Hubs clients do for the Event Hubs-compatible endpoint: the same form, but the
/// HMAC key is the key text's UTF-8 bytes, not its base64 decoding.
pub fn generate_event_hubs_token(resource: &str, key: &str, key_name: &str, expiry: u64) -> String {
    token_signed_with(resource, key.as_bytes(), Some(key_name), expiry)
}

fn token_signed_with(resource: &str, key: &[u8], key_name: Option<&str>, expiry: u64) -> String {
    let sr = encode_resource(resource);
    let se = expiry.to_string();
    let sig = BASE64.encode(signature_bytes(key, &sr, &se));
    let sig = utf8_percent_encode(&sig, SR_ENCODE_SET);
    let mut token = format!("{TOKEN_PREFIX}sr={sr}&sig={sig}&se={se}");
    if let Some(name) = key_name {
        token.push_str("&skn=");
        token.push_str(&utf8_percent_encode(name, SR_ENCODE_SET).to_string());
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn key_bytes() -> Vec<u8> {
        BASE64.decode(KEY).expect("test key")
    }

    #[test]
    fn device_token_matches_the_wire_spec_vector() {
        let token = generate_token("myhub.azure-devices.net/devices/dev1", KEY, None, 1_700_000_000).expect("sign");
        assert_eq!(
            token,
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=i%2BYmMcSSZc4KzBi6ejz3l0iL%2B2sN0CE3q6vSm837h2g%3D&se=1700000000"
        );
        let parsed = SasToken::parse(&token).expect("parse");
        assert!(parsed.is_signed_with(&key_bytes()));
        assert_eq!(parsed.resource, "myhub.azure-devices.net/devices/dev1");
        assert_eq!(parsed.key_name, None);
    }

    #[test]
    fn node_and_python_service_forms_both_verify() {
        let node = "SharedAccessSignature sr=myhub.azure-devices.net&sig=iIzEw6hi6GK79RY5jNXO6QeQkSL%2FAx4zTmy44X2G1VY%3D&skn=iothubowner&se=1700000000";
        let python = "SharedAccessSignature sr=myhub.azure-devices.net&sig=iIzEw6hi6GK79RY5jNXO6QeQkSL/Ax4zTmy44X2G1VY%3D&se=1700000000&skn=iothubowner";
        for text in [node, python] {
            let token = SasToken::parse(text).expect("parse");
            assert!(token.is_signed_with(&key_bytes()), "{text}");
            assert_eq!(token.key_name.as_deref(), Some("iothubowner"));
            assert_eq!(token.expiry, 1_700_000_000);
        }
    }

    #[test]
    fn signature_is_over_sr_as_sent_not_as_decoded() {
        // Node writes `*` as `%2a`; the same resource with `%2A` is a different signed text.
        let lower = sign_raw("h%2Fdevices%2Fa%2a", "100");
        let token =
            SasToken::parse(&format!("SharedAccessSignature sr=h%2Fdevices%2Fa%2a&sig={lower}&se=100")).expect("parse");
        assert!(token.is_signed_with(&key_bytes()));
        assert_eq!(token.resource, "h/devices/a*");
        let upper =
            SasToken::parse(&format!("SharedAccessSignature sr=h%2Fdevices%2Fa%2A&sig={lower}&se=100")).expect("parse");
        assert!(!upper.is_signed_with(&key_bytes()));
    }

    fn sign_raw(sr: &str, se: &str) -> String {
        utf8_percent_encode(&BASE64.encode(signature_bytes(&key_bytes(), sr, se)), SR_ENCODE_SET).to_string()
    }

    #[test]
    fn wrong_key_and_tampered_expiry_fail() {
        let token = generate_token("h/devices/d", KEY, None, 500).expect("sign");
        let parsed = SasToken::parse(&token).expect("parse");
        assert!(!parsed.is_signed_with(b"another key"));
        let tampered = SasToken::parse(&token.replace("se=500", "se=501")).expect("parse");
        assert!(!tampered.is_signed_with(&key_bytes()));
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_reason() {
        let sig = sign_raw("h", "1");
        let cases = [
            ("sr=h&sig=x&se=1", SasParseError::MissingPrefix),
            ("SharedAccessSignature sig=abc&se=1", SasParseError::MissingField("sr")),
            ("SharedAccessSignature sr=h&se=1", SasParseError::MissingField("sig")),
            ("SharedAccessSignature sr=h&sig=abc", SasParseError::MissingField("se")),
            ("SharedAccessSignature sr=h&sig=abc&se=-1", SasParseError::Malformed("se")),
            ("SharedAccessSignature sr=h&sig=abc&se=1e9", SasParseError::Malformed("se")),
            ("SharedAccessSignature sr=h&sig=%%%&se=1", SasParseError::Malformed("sig")),
            ("SharedAccessSignature sr=h&sig=YWJj&se=1", SasParseError::Malformed("sig")),
            ("SharedAccessSignature sr=h&sr=h&sig=abc&se=1", SasParseError::DuplicateField("sr")),
        ];
        for (text, expected) in cases {
            assert_eq!(SasToken::parse(text), Err(expected), "{text}");
        }
        let empty_skn = format!("SharedAccessSignature sr=h&sig={sig}&se=1&skn=");
        assert_eq!(SasToken::parse(&empty_skn), Err(SasParseError::Malformed("skn")));
        let long = format!("SharedAccessSignature sr={}&sig={sig}&se=1", "a".repeat(MAX_TOKEN_LEN));
        assert_eq!(SasToken::parse(&long), Err(SasParseError::TooLong));
    }

    #[test]
    fn expiry_is_exclusive() {
        let parsed = SasToken::parse(&generate_token("h", KEY, Some("p"), 100).expect("sign")).expect("parse");
        assert!(!parsed.is_expired_at(99));
        assert!(parsed.is_expired_at(100));
    }

    #[test]
    fn resource_scope_is_by_whole_segment_and_host_case_insensitive() {
        assert!(resource_covers("MyHub/devices", "myhub/devices/d1"));
        assert!(resource_covers("myhub", "myhub/devices/d1"));
        assert!(resource_covers("myhub/devices/d1", "myhub/devices/d1"));
        assert!(resource_covers("myhub/devices/d1/", "myhub/devices/d1"));
        assert!(!resource_covers("myhub/devices/d1", "myhub/devices/d10"));
        assert!(!resource_covers("myhub/devices/d1", "myhub/devices"));
        assert!(!resource_covers("", "myhub"));
    }

    proptest::proptest! {
        #[test]
        fn any_resource_round_trips(resource in "[ -~]{1,80}", expiry in 0u64..=u32::MAX as u64) {
            let token = generate_token(&resource, KEY, Some("iothubowner"), expiry).expect("sign");
            let parsed = SasToken::parse(&token).expect("parse");
            proptest::prop_assert_eq!(&parsed.resource, &resource);
            proptest::prop_assert!(parsed.is_signed_with(&key_bytes()));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,200}") {
            let _ = SasToken::parse(&text);
            let _ = SasToken::parse(&format!("{TOKEN_PREFIX}{text}"));
        }
    }
}

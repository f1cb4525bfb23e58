//! Webhook signatures: `X-FCFS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"`, keyed by the whole `whsec_…` string. The timestamp is signed with the body so a
//! captured delivery cannot be replayed later than the receiver's tolerance.

use aws_lc_rs::{hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::kernel::Unavailable;

/// Every signing secret starts with this, so a leaked one is recognisable (secret scanners).
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a signature's timestamp may be from the receiver's clock (the contract's 300 s).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a signature header does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header has no t= timestamp")]
    MissingTimestamp,
    #[error("the signature header has no v1= signature")]
    MissingSignature,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no v1= signature matches the body")]
    Mismatch,
}

/// A new signing secret: `whsec_` and 32 random bytes, base64url without padding.
///
/// `Err` only if the system's random source fails: the caller answers 503 rather than issuing a
/// weak secret (and nothing panics).
pub fn new_secret() -> Result<String, Unavailable> {
    let mut bytes = [0_u8; 32];
    rand::fill(&mut bytes).map_err(|_| Unavailable::new("random", "the system's random source failed"))?;
    Ok(format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The full header value signing `body` at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let tag = hmac::sign(&key(secret), &signed_payload(timestamp, body));
    format!("t={timestamp},v1={}", hex::encode(tag.as_ref()))
}

/// Checks `header` against `body` as a receiver would: the timestamp within `tolerance_secs` of
/// `now_unix`, and one of its `v1=` entries (several appear while a receiver rolls secrets)
/// matching, compared in constant time.
pub fn verify(
    secret: &str,
    header: &str,
    body: &str,
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for (name, value) in header.split(',').filter_map(|part| part.trim().split_once('=')) {
        match name {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => candidates.push(value),
            // Unknown schemes are skipped, so a later `v2=` does not break v1 receivers.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    if candidates.is_empty() {
        return Err(SignatureError::MissingSignature);
    }
    if now_unix.abs_diff(timestamp) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let key = key(secret);
    let payload = signed_payload(timestamp, body);
    // `hmac::verify` compares in constant time; a candidate that is not hex cannot match.
    candidates
        .into_iter()
        .filter_map(|candidate| hex::decode(candidate).ok())
        .any(|tag| hmac::verify(&key, &payload, &tag).is_ok())
        .then_some(())
        .ok_or(SignatureError::Mismatch)
}

fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

fn signed_payload(timestamp: i64, body: &str) -> Vec<u8> {
    format!("{timestamp}.{body}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently:
    // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_dGVzdC1zZWNyZXQtMzItYnl0ZXMtZm9yLXZlY3Rvcg",
    //   b"1796341201.{\"events\":[{\"id\":\"evt_1\",\"sequence\":1}]}", hashlib.sha256).hexdigest())'
    const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtMzItYnl0ZXMtZm9yLXZlY3Rvcg";
    const BODY: &str = r#"{"events":[{"id":"evt_1","sequence":1}]}"#;
    const T: i64 = 1_796_341_201;
    const EXPECTED: &str = "t=1796341201,v1=e5708fe92a036560e8575ad7c9d7121afa24d69c51b92faf37d4e483ca9cb2c8";

    #[test]
    fn signs_the_independently_computed_vector() {
        assert_eq!(sign(SECRET, T, BODY), EXPECTED);
    }

    #[test]
    fn verifies_its_own_signature_within_the_tolerance() {
        assert_eq!(verify(SECRET, EXPECTED, BODY, T, 300), Ok(()));
        assert_eq!(verify(SECRET, EXPECTED, BODY, T + 300, 300), Ok(()));
        assert_eq!(verify(SECRET, EXPECTED, BODY, T - 300, 300), Ok(()));
    }

    #[test]
    fn rejects_a_stale_or_future_timestamp() {
        assert_eq!(verify(SECRET, EXPECTED, BODY, T + 301, 300), Err(SignatureError::Stale));
        assert_eq!(verify(SECRET, EXPECTED, BODY, T - 301, 300), Err(SignatureError::Stale));
        assert_eq!(
            verify(SECRET, EXPECTED, BODY, i64::MIN, 300),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn rejects_another_body_secret_or_timestamp() {
        let other_body = r#"{"events":[{"id":"evt_1","sequence":2}]}"#;
        assert_eq!(
            verify(SECRET, EXPECTED, other_body, T, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_other", EXPECTED, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it to look fresh breaks the signature.
        let moved = EXPECTED.replace("t=1796341201", "t=1796341202");
        assert_eq!(verify(SECRET, &moved, BODY, T, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn accepts_any_matching_v1_among_several() {
        let v1 = EXPECTED.split_once(",v1=").unwrap().1;
        let header = format!("t={T},v1=00ff,v1=not-hex, v1={v1},v2=whatever");
        assert_eq!(verify(SECRET, &header, BODY, T, 300), Ok(()));
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(verify(SECRET, "", BODY, T, 300), Err(SignatureError::MissingTimestamp));
        assert_eq!(
            verify(SECRET, "v1=abc", BODY, T, 300),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            verify(SECRET, "t=x,v1=abc", BODY, T, 300),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            verify(SECRET, &format!("t={T}"), BODY, T, 300),
            Err(SignatureError::MissingSignature)
        );
        assert_eq!(
            verify(SECRET, &format!("t={T},v1="), BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn new_secrets_are_prefixed_32_random_bytes() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        let encoded = a.strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(encoded).unwrap().len(), 32);
        assert_eq!(encoded.len(), 43);
    }
}

//! Every error code an API function answers with, once: its status, what it means and what a
//! client does about it. `ApiError`'s mapping picks a code from here, and `docs/errors.md` is
//! rendered from this table (`errors_markdown`); a test fails when the file or the OpenAPI
//! document's `ErrorCode` enum differs from it.

use lambda_http::http::StatusCode;

/// What a client does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retrying the same request gives the same answer: change the request.
    No,
    /// The same request can succeed later, after `Retry-After` seconds.
    AfterRetryAfter,
    /// The same request succeeds once something else happened (named in the advice).
    Once(&'static str),
}

macro_rules! error_codes {
    ($($variant:ident = $name:literal, $status:ident, $retry:expr, $meaning:literal;)*) => {
        /// A code of the `error` field.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }

            pub fn status(self) -> StatusCode {
                match self { $(Self::$variant => StatusCode::$status),* }
            }

            pub fn retry(self) -> Retry {
                match self { $(Self::$variant => $retry),* }
            }

            pub fn meaning(self) -> &'static str {
                match self { $(Self::$variant => $meaning),* }
            }
        }
    };
}

error_codes! {
    InvalidRequest = "INVALID_REQUEST", BAD_REQUEST, Retry::No,
        "The request is malformed: a field (named in `field`) is missing, of the wrong type or out of range, the body is not JSON, or the query has an unknown parameter.";
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", PAYLOAD_TOO_LARGE, Retry::No,
        "The body exceeds the route's limit (16 KiB for campaigns, 1 KiB for issues).";
    Unauthorized = "UNAUTHORIZED", UNAUTHORIZED, Retry::No,
        "The request carries no authorized partner (behind API Gateway the gateway answers first).";
    KeyExpired = "KEY_EXPIRED", FORBIDDEN, Retry::Once("an operator issued a new key"),
        "The API key passed its `expiresAt`; API Gateway may still have held its cached allow.";
    LimitExceeded = "LIMIT_EXCEEDED", UNPROCESSABLE_ENTITY, Retry::Once("the partner is under its limit again, or an operator raised it (`fcfs-admin limits`)"),
        "The call would take the partner past one of its limits, named in `field` (live campaigns, orders per month, idempotency records); nothing of it was done.";
    NotFound = "NOT_FOUND", NOT_FOUND, Retry::No,
        "No such campaign, coupon, transaction, grading run or grade for this partner (another partner's is not found either).";
    AlreadyIssued = "ALREADY_ISSUED", CONFLICT, Retry::No,
        "The user already holds a place in this campaign. The answer repeats the first request's `requestId` and `rank` and the coupon's `status` (with `couponId` once issued), so retrying an issue call whose answer was lost is safe.";
    SoldOut = "SOLD_OUT", GONE, Retry::No,
        "Every place of the campaign is taken.";
    NotOpen = "NOT_OPEN", UNPROCESSABLE_ENTITY, Retry::Once("`issueStartsAt` has passed"),
        "The campaign's issuance has not started.";
    Ended = "ENDED", UNPROCESSABLE_ENTITY, Retry::No,
        "The campaign's issuance has ended.";
    NotOnSale = "NOT_ON_SALE", UNPROCESSABLE_ENTITY, Retry::No,
        "A `REWARD` campaign: its coupons are granted by grading, never issued on request.";
    AlreadyUsed = "ALREADY_USED", CONFLICT, Retry::No,
        "The coupon was used for another order (the same order again answers its first use).";
    NotUsed = "NOT_USED", CONFLICT, Retry::No,
        "A cancel for a coupon not used by that order.";
    Expired = "EXPIRED", GONE, Retry::No,
        "The coupon has expired.";
    InsufficientPoints = "INSUFFICIENT_POINTS", CONFLICT, Retry::Once("the user earned more points"),
        "The user's spendable balance is below the amount.";
    NotCancellable = "NOT_CANCELLABLE", CONFLICT, Retry::No,
        "The transaction cannot be cancelled: not a use, or already cancelled.";
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED", UNPROCESSABLE_ENTITY, Retry::No,
        "The `Idempotency-Key` was used before for a different request: use a new key for a new operation.";
    InProgress = "IN_PROGRESS", CONFLICT, Retry::AfterRetryAfter,
        "A request with the same `Idempotency-Key` is still being processed: retry with the same key to get its answer.";
    OrderConflict = "ORDER_CONFLICT", CONFLICT, Retry::No,
        "An order id recorded before with another user, amount or order time, or a status change no order may take (out of CANCELLED or REFUNDED, or two statuses at one instant); nothing of the call was recorded.";
    UnknownCampaign = "UNKNOWN_CAMPAIGN", UNPROCESSABLE_ENTITY, Retry::No,
        "A grading tier names a campaign that is not the partner's (`field: tiers.couponCampaignId`).";
    NotRewardCampaign = "NOT_REWARD_CAMPAIGN", UNPROCESSABLE_ENTITY, Retry::No,
        "A grading tier names a `SALE` campaign; rewards come from `REWARD` campaigns (`field: tiers.couponCampaignId`).";
    NoPolicy = "NO_POLICY", CONFLICT, Retry::Once("`PUT /v1/grading/policy`"),
        "A grading run was asked for before the partner set a grading policy.";
    MonthNotEnded = "MONTH_NOT_ENDED", UNPROCESSABLE_ENTITY, Retry::Once("the month has ended (the 1st of the next, UTC)"),
        "A grading run of the current or a future month: a run is final, and a month's orders and refunds are not all in before it ends (`field: month`).";
    Unavailable = "UNAVAILABLE", SERVICE_UNAVAILABLE, Retry::AfterRetryAfter,
        "A backing service (Redis, SQS, MySQL) failed or timed out, or a campaign's Redis state is missing (rebuilt by itself from MySQL once no reservation is on its way; the message names the campaign); nothing was kept. The message never carries backend details.";
}

/// `docs/errors.md`: the table above, and what API Gateway itself answers.
pub fn errors_markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         <!-- Generated from shared/src/http/codes.rs (ErrorCode); `FCFS_WRITE_DOCS=1 cargo test -p \
         fcfs-shared --lib errors_doc` rewrites it. A test fails when it differs. -->\n\n\
         Every error a function answers is JSON: `{\"error\": CODE, \"message\": text, \"field\"?: name}`. \
         A 503 carries `Retry-After` (seconds). Retry only what the last column says; a retried \
         points write must carry the same `Idempotency-Key`.\n\n\
         | code | status | meaning | retry |\n| --- | --- | --- | --- |\n",
    );
    for code in ErrorCode::ALL {
        let retry = match code.retry() {
            Retry::No => "no: change the request".to_owned(),
            Retry::AfterRetryAfter => "yes, the same request after `Retry-After`".to_owned(),
            Retry::Once(what) => format!("once {what}"),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            code.as_str(),
            code.status().as_u16(),
            code.meaning(),
            retry
        ));
    }
    out.push_str(
        "\n## Answers of API Gateway (before a function runs)\n\n\
         | status | body | when | retry |\n| --- | --- | --- | --- |\n\
         | 401 | `{\"message\":\"Unauthorized\"}` | no `X-API-KEY` header, or an empty one (an `Authorization: Bearer` header is not read: send the key as `X-API-KEY`) | no |\n\
         | 403 | `{\"Message\":\"User is not authorized to access this resource with an explicit deny\"}` | the key is unknown, revoked, expired or malformed | no |\n\
         | 403 | `{\"message\":\"Forbidden\"}` | the partner's usage-plan key is not registered (`fcfs-admin keys create` registers it) | no |\n\
         | 403 | `{\"message\":\"Missing Authentication Token\"}` | no route has this method and path | no |\n\
         | 413 | `{\"message\":\"Request Too Long\"}` | the body exceeds 10 MiB | no |\n\
         | 429 | `{\"message\":\"Too Many Requests\"}` | over the stage's or the partner's rate (`PartnerThrottleRate`, `fcfs-admin limits set --rate`) | yes, with backoff |\n\
         | 500 | `{\"message\":null}` | the authorizer failed (its key store is down or slow) | yes, with backoff |\n\
         | 502 | `{\"message\":\"Internal server error\"}` | the function crashed or timed out | yes, with backoff (a write may have happened: retry points writes with the same `Idempotency-Key`) |\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
    }

    #[test]
    fn errors_doc_is_the_table() {
        let path = repo_file("docs/errors.md");
        let wanted = errors_markdown();
        if std::env::var_os("FCFS_WRITE_DOCS").is_some() {
            std::fs::write(&path, &wanted).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            current == wanted,
            "docs/errors.md differs from shared/src/http/codes.rs: FCFS_WRITE_DOCS=1 cargo test -p fcfs-shared --lib errors_doc"
        );
    }

    /// The OpenAPI document's `ErrorCode` enum lists exactly these codes, in this order.
    #[test]
    fn the_openapi_error_code_enum_is_the_table() {
        let text = std::fs::read_to_string(repo_file("docs/openapi.yaml")).unwrap();
        let listed: Vec<&str> = text
            .split("\n    ErrorCode:\n")
            .nth(1)
            .expect("components.schemas.ErrorCode")
            .lines()
            .skip_while(|l| l.trim() != "enum:")
            .skip(1)
            .map_while(|l| l.trim().strip_prefix("- "))
            .collect();
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, codes);
    }

    #[test]
    fn each_code_is_listed_once() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}

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
        "No such campaign, coupon, transaction, checkout hold, grading run, grade or webhook registration for this partner (another partner's is not found either).";
    AlreadyIssued = "ALREADY_ISSUED", CONFLICT, Retry::No,
        "The user already holds a place in this campaign. The answer repeats the first request's `requestId` and `rank` and the coupon's `status` (with `couponId` once issued), so retrying an issue call whose answer was lost is safe.";
    SoldOut = "SOLD_OUT", GONE, Retry::No,
        "Every place of the campaign is taken. An instance repeats this answer from memory for up to 1 s: a user who already holds a place and retries within it may get 410 rather than 409 `ALREADY_ISSUED`; the status route always tells where the user stands.";
    NotOpen = "NOT_OPEN", UNPROCESSABLE_ENTITY, Retry::Once("`issueStartsAt` has passed"),
        "The campaign's issuance has not started.";
    Ended = "ENDED", UNPROCESSABLE_ENTITY, Retry::No,
        "The campaign's issuance has ended.";
    NotOnSale = "NOT_ON_SALE", UNPROCESSABLE_ENTITY, Retry::No,
        "A `REWARD` campaign: its coupons are granted by grading, never issued on request.";
    Paused = "PAUSED", LOCKED, Retry::Once("the partner resumed the campaign (`PATCH … {\"paused\": false}`)"),
        "The campaign is paused: it gives no new places (a user who holds one is still answered `ALREADY_ISSUED`).";
    BelowReserved = "BELOW_RESERVED", CONFLICT, Retry::No,
        "A `totalQuantity` below the places already taken (`field: totalQuantity`); nothing was changed.";
    ChangeInProgress = "CHANGE_IN_PROGRESS", CONFLICT, Retry::AfterRetryAfter,
        "Another change of the same campaign is being made; changes of one campaign are made one at a time.";
    AlreadyUsed = "ALREADY_USED", CONFLICT, Retry::No,
        "The coupon was used for another order (the same order again answers its first use).";
    NotUsed = "NOT_USED", CONFLICT, Retry::No,
        "A cancel for a coupon not used by that order.";
    Expired = "EXPIRED", GONE, Retry::No,
        "The coupon has expired.";
    CouponHeld = "COUPON_HELD", CONFLICT, Retry::Once("the hold is released or ends (`expiresAt`)"),
        "The coupon is held by a checkout hold of another order (or, for a one-step use, by any hold: confirm the hold instead).";
    OrderHeld = "ORDER_HELD", CONFLICT, Retry::No,
        "The order has a live checkout hold made with a different request (user, amount, coupon, points or ttl); release it first to hold the order anew.";
    HoldExpired = "HOLD_EXPIRED", GONE, Retry::No,
        "The checkout hold ended (`expiresAt`) before the confirm: what it held is back, nothing was spent. Hold again if the order is still to be paid.";
    HoldConfirmed = "HOLD_CONFIRMED", CONFLICT, Retry::No,
        "A release of a checkout hold already confirmed: the order spent the coupon and points (cancel the uses to give them back).";
    HoldReleased = "HOLD_RELEASED", CONFLICT, Retry::No,
        "A confirm of a checkout hold already released: nothing was spent. Hold again if the order is still to be paid.";
    InsufficientPoints = "INSUFFICIENT_POINTS", CONFLICT, Retry::Once("the user earned more points"),
        "The user's spendable balance is below the amount.";
    NotCancellable = "NOT_CANCELLABLE", CONFLICT, Retry::No,
        "The transaction cannot be cancelled: not a use, already cancelled, or held by a checkout hold (confirm or release the hold instead).";
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
    WebhookUrlRefused = "WEBHOOK_URL_REFUSED", UNPROCESSABLE_ENTITY, Retry::No,
        "The webhook URL may not receive deliveries (`field: url`): not `https`, or its host is or resolves to a loopback, private, link-local (such as the instance metadata address) or other non-public address, or does not resolve. The message names which.";
    RouteNotFound = "ROUTE_NOT_FOUND", FORBIDDEN, Retry::No,
        "No route has this method and path: API Gateway answers it before any key is looked at, with its usual 403.";
    Forbidden = "FORBIDDEN", FORBIDDEN, Retry::No,
        "API Gateway refused the key: unknown, revoked, expired or malformed, or its partner has no usage-plan key (`fcfs-admin keys create` registers it).";
    Throttled = "THROTTLED", TOO_MANY_REQUESTS, Retry::AfterRetryAfter,
        "Over the stage's or the partner's request rate (`PartnerThrottleRate`, `fcfs-admin limits set --rate`); nothing was done. Back off, with jitter.";
    Internal = "INTERNAL", BAD_GATEWAY, Retry::AfterRetryAfter,
        "The function failed or timed out (504 then) before answering; a write may have happened: retry points writes with the same `Idempotency-Key`, an issue call answers its first answer again.";
    Unavailable = "UNAVAILABLE", SERVICE_UNAVAILABLE, Retry::AfterRetryAfter,
        "A backing service (Redis, SQS, MySQL) failed or timed out, or a campaign's Redis state is missing (rebuilt by itself from MySQL once no reservation is on its way; the message names the campaign); nothing was kept. The message never carries backend details.";
}

/// What API Gateway answers itself, before a function runs: one `GatewayResponses` entry of
/// `template.yaml` each (its response type), a JSON body with a code of the table above (a test
/// holds the template to this list, and the local runner answers from the template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayAnswer {
    /// API Gateway's response type (`UNAUTHORIZED`, `THROTTLED`, …).
    pub response_type: &'static str,
    /// The status API Gateway answers with (set in the template where it differs from the type's).
    pub status: u16,
    pub code: ErrorCode,
    pub message: &'static str,
    /// When it happens, for `docs/errors.md`.
    pub when: &'static str,
}

impl GatewayAnswer {
    /// The response template: a static text in which API Gateway puts the request id.
    pub fn template(&self) -> String {
        format!(
            r#"{{"error":"{}","message":"{}","requestId":"$context.requestId"}}"#,
            self.code.as_str(),
            self.message
        )
    }

    /// Whether the answer carries `Retry-After` (1 second).
    pub fn retry_after(&self) -> bool {
        self.code.retry() == Retry::AfterRetryAfter
    }
}

pub const GATEWAY_ANSWERS: &[GatewayAnswer] = &[
    GatewayAnswer {
        response_type: "UNAUTHORIZED",
        status: 401,
        code: ErrorCode::Unauthorized,
        message: "no API key: send it in the X-API-KEY header (an Authorization: Bearer header is not read)",
        when: "no `X-API-KEY` header, or an empty one (an `Authorization: Bearer` header is not read)",
    },
    GatewayAnswer {
        response_type: "ACCESS_DENIED",
        status: 403,
        code: ErrorCode::Forbidden,
        message: "the API key is unknown, revoked, expired or malformed",
        when: "the authorizer denied the key",
    },
    GatewayAnswer {
        response_type: "INVALID_API_KEY",
        status: 403,
        code: ErrorCode::Forbidden,
        message: "the partner's key is not registered in the usage plan: an operator runs fcfs-admin keys create",
        when: "the partner's usage-plan key is not registered",
    },
    GatewayAnswer {
        response_type: "MISSING_AUTHENTICATION_TOKEN",
        status: 403,
        code: ErrorCode::RouteNotFound,
        message: "no route has this method and path",
        when: "no route has this method and path",
    },
    GatewayAnswer {
        response_type: "REQUEST_TOO_LARGE",
        status: 413,
        code: ErrorCode::PayloadTooLarge,
        message: "the body exceeds 10 MiB",
        when: "the body exceeds 10 MiB",
    },
    GatewayAnswer {
        response_type: "THROTTLED",
        status: 429,
        code: ErrorCode::Throttled,
        message: "over the request rate of the stage or of the partner: retry after Retry-After seconds, with backoff",
        when: "over the stage's or the partner's rate",
    },
    GatewayAnswer {
        response_type: "QUOTA_EXCEEDED",
        status: 429,
        code: ErrorCode::Throttled,
        message: "over the partner's request quota: retry after Retry-After seconds, with backoff",
        when: "over a usage-plan quota (none is set today)",
    },
    GatewayAnswer {
        response_type: "AUTHORIZER_CONFIGURATION_ERROR",
        status: 503,
        code: ErrorCode::Unavailable,
        message: "the API key could not be checked now: retry after Retry-After seconds",
        when: "the authorizer failed (its key store is down or slow; API Gateway's own status would be 500)",
    },
    GatewayAnswer {
        response_type: "AUTHORIZER_FAILURE",
        status: 503,
        code: ErrorCode::Unavailable,
        message: "the API key could not be checked now: retry after Retry-After seconds",
        when: "the authorizer's answer could not be used (API Gateway's own status would be 500)",
    },
    GatewayAnswer {
        response_type: "DEFAULT_5XX",
        status: 502,
        code: ErrorCode::Internal,
        message: "the function failed or timed out before answering: retry with backoff (points writes with the same Idempotency-Key)",
        when: "the function crashed (502) or timed out (504)",
    },
];

/// `docs/errors.md`: the table above, and what API Gateway itself answers.
pub fn errors_markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         <!-- Generated from shared/src/http/codes.rs (ErrorCode); `FCFS_WRITE_DOCS=1 cargo test -p \
         fcfs-shared --lib errors_doc` rewrites it. A test fails when it differs. -->\n\n\
         Every error a function answers is JSON: `{\"error\": CODE, \"message\": text, \"field\"?: name}`. \
         An answer whose last column says `Retry-After` carries that header (seconds). Retry only what the last column says; a retried \
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
         `template.yaml`'s `GatewayResponses` make them JSON with a code too, plus the request's \
         id: `{\"error\": CODE, \"message\": text, \"requestId\": id}` (the local runner answers \
         the same from the template). 429, 502, 503 and 504 carry `Retry-After: 1`.\n\n\
         | status | code | message | when |\n| --- | --- | --- | --- |\n",
    );
    for answer in GATEWAY_ANSWERS {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            answer.status,
            answer.code.as_str(),
            answer.message,
            answer.when
        ));
    }
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

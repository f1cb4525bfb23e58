use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};

/// A request as API Gateway hands it to a function: the route it matched (`route`, the path
/// template as `template.yaml` declares it), path parameters and, when an authorizer ran, its
/// context. Used by in-process callers (tests).
pub fn gateway_request(
    method: &str,
    route: &str,
    path_params: &[(&str, &str)],
    body: impl Into<String>,
    partner_id: Option<&str>,
) -> Request {
    let mut req = Request::new(Body::Text(body.into()));
    *req.method_mut() = method.parse().unwrap_or(lambda_http::http::Method::GET);
    let params: std::collections::HashMap<String, String> = path_params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut ctx = lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequestContext::default();
    ctx.resource_path = Some(route.to_owned());
    if let Some(partner) = partner_id {
        ctx.authorizer.fields.insert("partnerId".into(), partner.into());
    }
    req.with_path_parameters(params)
        .with_request_context(RequestContext::ApiGatewayV1(ctx))
}

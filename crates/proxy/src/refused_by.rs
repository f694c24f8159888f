//! The target sidecar's word to the gateway on why it refused a call the gateway allowed
//! ([`REFUSED_BY_HEADER`], e.g. `app_not_owned`), so that the gateway's one audit record of
//! the call says why it failed.
//!
//! The header is believed only on a response in the form a sidecar's refusal takes on the
//! wire: HTTP 502, or — for a gRPC caller, whose refusals are gRPC statuses
//! ([`crate::grpc::reshape`]) — a trailers-only gRPC error (HTTP 200, `content-type:
//! application/grpc`, a non-zero `grpc-status` in the head). One predicate,
//! [`is_refusal_form`], serves both ends: the sidecar drops the app's own header from every
//! response of that form (`app_uid::mark`), so an app cannot write the gateway's audit; the
//! gateway reads the header of that form only, and only of the sidecar it called over mTLS
//! (its one upstream), and never lets it travel on to the calling client ([`take`]).

use http::{Response, StatusCode};

use crate::http::{REFUSED_BY_HEADER, is_grpc};

/// Whether `response` has the form of a sidecar's refusal: HTTP 502, or a trailers-only gRPC
/// error. A gRPC error that came with a body has its status in the trailers and does not
/// count. Any other status costs one comparison.
pub fn is_refusal_form<B>(response: &Response<B>) -> bool {
    match response.status() {
        StatusCode::BAD_GATEWAY => true,
        StatusCode::OK => {
            is_grpc(response.headers())
                && crate::grpc::status_of(response.headers()).is_some_and(|code| code != 0)
        }
        _ => false,
    }
}

/// Removes [`REFUSED_BY_HEADER`] from `response` (it is the proxy's, for the next hop only,
/// never for a client), returning the rule it named when the response is a refusal
/// ([`is_refusal_form`]).
pub fn take<B>(response: &mut Response<B>) -> Option<String> {
    let value = response.headers_mut().remove(REFUSED_BY_HEADER)?;
    if !is_refusal_form(response) {
        return None;
    }
    value.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{full, json_error, trailers_only};

    fn named(mut response: Response<crate::http::ProxyBody>) -> Response<crate::http::ProxyBody> {
        response.headers_mut().insert(
            REFUSED_BY_HEADER,
            http::HeaderValue::from_static("app_not_owned"),
        );
        response
    }

    #[test]
    fn a_502_and_a_trailers_only_grpc_error_are_refusals_and_nothing_else_is() {
        let bad_gateway = json_error(StatusCode::BAD_GATEWAY, "r", "m");
        assert!(is_refusal_form(&bad_gateway));
        assert!(is_refusal_form(&trailers_only(14, "unavailable")));
        // A gRPC success, a 200 that is not gRPC, other errors: not refusal forms.
        assert!(!is_refusal_form(&trailers_only(0, "")));
        let mut plain = Response::new(full("ok"));
        plain
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("14"));
        assert!(!is_refusal_form(&plain));
        assert!(!is_refusal_form(&json_error(
            StatusCode::FORBIDDEN,
            "r",
            "m"
        )));
        assert!(!is_refusal_form(&json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "r",
            "m"
        )));
    }

    #[test]
    fn the_rule_is_taken_of_a_refusal_and_the_header_removed_from_every_response() {
        let mut grpc = named(trailers_only(14, "refused"));
        assert_eq!(take(&mut grpc).as_deref(), Some("app_not_owned"));
        assert!(grpc.headers().get(REFUSED_BY_HEADER).is_none());
        let mut bad_gateway = named(json_error(StatusCode::BAD_GATEWAY, "r", "m"));
        assert_eq!(take(&mut bad_gateway).as_deref(), Some("app_not_owned"));
        // On a success it names nothing, and is not passed on either.
        let mut ok = named(Response::new(full("ok")));
        assert_eq!(take(&mut ok), None);
        assert!(ok.headers().get(REFUSED_BY_HEADER).is_none());
        let mut grpc_ok = named(trailers_only(0, ""));
        assert_eq!(take(&mut grpc_ok), None);
        assert!(grpc_ok.headers().get(REFUSED_BY_HEADER).is_none());
    }
}

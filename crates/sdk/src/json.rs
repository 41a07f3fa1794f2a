//! JSON in and out.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A JSON response with `status`.
pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<http::Response<Bytes>, Error> {
    let body = serde_json::to_vec(value).map_err(Error::internal)?;
    let mut response = http::Response::new(Bytes::from(body));
    *response.status_mut() = http::StatusCode::from_u16(status)
        .map_err(|_| Error::internal(format!("bad status {status}")))?;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Reading a request's body as JSON.
pub trait RequestExt {
    /// The body as `T`; a 400 naming the problem (and where) if it is not.
    fn json<T: DeserializeOwned>(&self) -> Result<T, Error>;
}

impl RequestExt for http::Request<Bytes> {
    fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        if self.body().is_empty() {
            return Err(Error::bad_request(
                "the request body is empty; send a JSON document",
            ));
        }
        serde_json::from_slice(self.body())
            .map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct NewTodo {
        title: String,
    }

    fn request(body: &str) -> http::Request<Bytes> {
        http::Request::post("/")
            .body(Bytes::from(body.to_string()))
            .unwrap()
    }

    #[test]
    fn bodies_parse_or_say_why_not() {
        assert_eq!(
            request(r#"{"title":"milk"}"#).json::<NewTodo>(),
            Ok(NewTodo {
                title: "milk".into()
            })
        );
        let missing = request(r#"{"titel":"milk"}"#)
            .json::<NewTodo>()
            .unwrap_err();
        assert_eq!(missing.status(), 400);
        assert!(
            missing.message().contains("missing field `title`"),
            "{}",
            missing.message()
        );
        assert!(
            request("{")
                .json::<NewTodo>()
                .unwrap_err()
                .message()
                .contains("line 1")
        );
        assert!(
            request("")
                .json::<NewTodo>()
                .unwrap_err()
                .message()
                .contains("empty")
        );
    }

    #[test]
    fn responses_carry_json() {
        let response = json(201, &serde_json::json!({"id": 1})).unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.body(), r#"{"id":1}"#);
        assert_eq!(response.headers()["content-type"], "application/json");
    }
}

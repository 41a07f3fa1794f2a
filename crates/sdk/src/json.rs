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

/// Reading a request's body and query.
pub trait RequestExt {
    /// The body as `T`; a 400 naming the problem (and where) if it is not.
    fn json<T: DeserializeOwned>(&self) -> Result<T, Error>;

    /// The first query parameter `name`, percent-decoded (`+` is a space).
    fn query(&self, name: &str) -> Option<String>;

    /// The query parameter `name` parsed as `T`; `None` when absent, a 400
    /// naming the parameter when it does not parse.
    fn query_as<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, Error>
    where
        T::Err: std::fmt::Display,
    {
        self.query(name)
            .map(|v| {
                v.parse().map_err(|e| {
                    Error::bad_request(format!("query parameter `{name}`={v:?} is invalid: {e}"))
                })
            })
            .transpose()
    }
}

/// Decodes `%XX` escapes and `+`; malformed escapes are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

    fn query(&self, name: &str) -> Option<String> {
        self.uri().query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
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
    fn query_parameters_are_decoded_and_parsed() {
        let request =
            http::Request::get("/todos?limit=5&cursor=a%2Fb%3D&q=milk+and%20eggs&bad=%zz&flag")
                .body(Bytes::new())
                .unwrap();
        assert_eq!(request.query("cursor").as_deref(), Some("a/b="));
        assert_eq!(request.query("q").as_deref(), Some("milk and eggs"));
        assert_eq!(request.query("bad").as_deref(), Some("%zz"));
        assert_eq!(request.query("flag").as_deref(), Some(""));
        assert_eq!(request.query("missing"), None);
        assert_eq!(request.query_as::<u32>("limit"), Ok(Some(5)));
        let error = request.query_as::<u32>("cursor").unwrap_err();
        assert_eq!(error.status(), 400);
        assert!(error.message().contains("`cursor`"), "{}", error.message());
        let trailing = http::Request::get("/?a=%4").body(Bytes::new()).unwrap();
        assert_eq!(trailing.query("a").as_deref(), Some("%4"));
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

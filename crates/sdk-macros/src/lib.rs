//! The entry-point attribute of `verge-sdk`; use it as
//! `#[verge_sdk::handler]`, not from this crate.

#![warn(missing_docs)]

use proc_macro::TokenStream;
use quote::quote;
use syn::{ItemFn, parse_macro_input};

/// Makes an async function the worker's request handler.
///
/// The function takes a `verge_sdk::Request` and a `verge_sdk::Env` and
/// returns a `verge_sdk::Response` or a `Result<Response, E>` where `E`
/// converts into `verge_sdk::Error`. The attribute exports it as the
/// component's `wasi:http/incoming-handler`.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::TokenStream::from(attr)
                .into_iter()
                .next()
                .map_or_else(proc_macro2::Span::call_site, |t| t.span()),
            "#[verge_sdk::handler] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let function = parse_macro_input!(item as ItemFn);
    if function.sig.asyncness.is_none() {
        return syn::Error::new_spanned(
            function.sig.fn_token,
            "a Verge handler must be an `async fn (req: Request, env: Env) -> Result<Response>`",
        )
        .to_compile_error()
        .into();
    }
    if function.sig.inputs.len() != 2 {
        return syn::Error::new_spanned(
            &function.sig.inputs,
            "a Verge handler takes two arguments: `(req: Request, env: Env)`",
        )
        .to_compile_error()
        .into();
    }
    let name = &function.sig.ident;
    quote! {
        #function

        #[doc(hidden)]
        struct __VergeHandler;

        impl ::verge_sdk::__private::Guest for __VergeHandler {
            fn handle(
                request: ::verge_sdk::__private::IncomingRequest,
                response_out: ::verge_sdk::__private::ResponseOutparam,
            ) {
                ::verge_sdk::__private::serve(request, response_out, #name)
            }
        }

        ::verge_sdk::__private::wasip2::http::proxy::export!(
            __VergeHandler with_types_in ::verge_sdk::__private::wasip2
        );
    }
    .into()
}

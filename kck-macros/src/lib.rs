//! The `#[primer]` attribute of [kck](https://docs.rs/kck-core). Use it
//! through `kck_core::primer`, whose documentation describes it.
//!
//! The macro parses and checks the function and its arguments, reporting
//! every problem at once on the offending tokens, and generates a marker
//! type, an `impl Primer`, one registration and the typed getter. The
//! caching logic itself lives in `kck-core`.

mod args;
mod expand;
mod model;

use darling::FromMeta;
use darling::ast::NestedMeta;
use proc_macro::TokenStream;

/// Turns an `async fn` into a kck primer. See `kck_core::primer`.
#[proc_macro_attribute]
pub fn primer(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = match syn::parse::<syn::ItemFn>(item) {
        Ok(item) => item,
        Err(error) => return error.to_compile_error().into(),
    };
    let args = NestedMeta::parse_meta_list(args.into())
        .map_err(darling::Error::from)
        .and_then(|list| args::PrimerArgs::from_list(&list));
    let args = match args {
        Ok(args) => args,
        Err(error) => return with_fallback(error.write_errors(), &item),
    };
    match model::Model::new(args, item.clone()) {
        Ok(model) => expand::expand(&model).into(),
        Err(error) => with_fallback(error.to_compile_error(), &item),
    }
}

/// The errors, and the user's function unchanged, so the rest of the crate
/// still compiles against it and the IDE keeps working.
fn with_fallback(errors: proc_macro2::TokenStream, item: &syn::ItemFn) -> TokenStream {
    let mut tokens = errors;
    tokens.extend(expand::fallback(item));
    tokens.into()
}

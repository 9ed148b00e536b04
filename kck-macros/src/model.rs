//! From the parsed function and arguments to a checked model of the primer.
//! Every problem is collected, so the user sees them all at once.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, LitStr, Pat, Path, ReturnType, Type};

use crate::args::{OnChangeArg, PrimerArgs};

/// A checked primer.
pub(crate) struct Model {
    pub(crate) item: ItemFn,
    /// The primer's name: the key template's first segment.
    pub(crate) name: String,
    pub(crate) template: LitStr,
    /// The name the getter gives its scope parameter.
    pub(crate) scope_ident: Ident,
    /// The parameters after the context, in function order.
    pub(crate) params: Vec<Param>,
    /// For each placeholder of the template, in order, the index of its
    /// parameter in `params`.
    pub(crate) key_order: Vec<usize>,
    pub(crate) output: Type,
    pub(crate) policy: PolicyModel,
    pub(crate) depends_on: Vec<Path>,
    /// The zero-parameter primer whose value lists the parameter sets to
    /// keep warm.
    pub(crate) domain: Option<Path>,
    /// `augment`: the marker type implements `kck_core::augment::Augment`.
    pub(crate) augment: bool,
    /// `augment_from = [..]`: it implements `kck_core::augment::AugmentFrom` of each.
    pub(crate) augment_from: Vec<Path>,
    pub(crate) code_version: String,
    pub(crate) krate: Path,
}

pub(crate) struct Param {
    pub(crate) ident: Ident,
    /// The type as written.
    pub(crate) ty: Type,
    /// `&str`: the getter borrows, the key and the computation own a `String`.
    pub(crate) is_str: bool,
}

#[derive(Default)]
pub(crate) struct PolicyModel {
    pub(crate) refresh: Option<std::time::Duration>,
    pub(crate) stale_after: Option<std::time::Duration>,
    pub(crate) expire_after: Option<std::time::Duration>,
    pub(crate) on_demand: bool,
    pub(crate) stale_if_error: bool,
    pub(crate) invalidate_on_change: bool,
    pub(crate) prime_on_miss: bool,
    pub(crate) schedule: Option<LitStr>,
    pub(crate) verify_every: Option<std::time::Duration>,
}

/// Collects errors; `into_result` combines them.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let error = syn::Error::new(span, message);
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn into_result(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}

impl Model {
    pub(crate) fn new(args: PrimerArgs, item: ItemFn) -> Result<Model, syn::Error> {
        let mut errors = Errors::default();
        let sig = &item.sig;
        if sig.asyncness.is_none() {
            errors.push(sig.fn_token.span, "a primer must be an `async fn`");
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.push(sig.generics.span(), "a primer cannot be generic");
        }
        // Any path ending in `Result` (`std::io::Result<T>`,
        // `anyhow::Result<T>`...) is accepted; the type checker does the rest.
        let output = match &sig.output {
            ReturnType::Type(_, ty) if is_result(ty) => Some((**ty).clone()),
            ReturnType::Type(_, ty) => {
                errors.push(ty.span(), "a primer must return `Result<Value, Error>`");
                None
            }
            ReturnType::Default => {
                errors.push(
                    sig.ident.span(),
                    "a primer must return `Result<Value, Error>`",
                );
                None
            }
        };

        let mut inputs = sig.inputs.iter();
        let ctx = inputs.next().cloned();
        let scope_ident = match &ctx {
            Some(FnArg::Typed(arg)) => match (&*arg.pat, &*arg.ty) {
                (Pat::Ident(pat), Type::Reference(_)) => Some(pat.ident.clone()),
                (Pat::Wild(_), Type::Reference(_)) => {
                    Some(Ident::new("__kck_scope", Span::call_site()))
                }
                _ => None,
            },
            _ => None,
        };
        if scope_ident.is_none() {
            let span = ctx
                .as_ref()
                .map_or(sig.paren_token.span.join(), Spanned::span);
            errors.push(span, "a primer takes `ctx: &Ctx` as its first parameter");
        }

        let params: Vec<Param> = inputs
            .filter_map(|input| check_param(input, &mut errors))
            .collect();
        if params.len() > 8 {
            errors.push(
                params[8].ident.span(),
                "a primer takes at most eight parameters besides `ctx`",
            );
        }

        let template = args.key.clone();
        let (name, key_order) = check_template(&template, &params, &mut errors);

        let policy = PolicyModel {
            refresh: args.refresh.map(|d| d.value),
            stale_after: args.stale_after.map(|d| d.value),
            expire_after: args.expire_after.map(|d| d.value),
            on_demand: args.on_demand,
            stale_if_error: args.stale_if_error,
            invalidate_on_change: matches!(args.on_change, Some(OnChangeArg::Invalidate)),
            prime_on_miss: args.prime_on_miss.unwrap_or(true),
            schedule: args.schedule.map(|s| s.pattern),
            verify_every: args.verify_every.as_ref().map(|d| d.value),
        };
        if let Some(first) = args.augment_from.0.first()
            && !args.augment.is_present()
        {
            errors.push(
                first.span(),
                "`augment_from` needs `augment`: the deltas it maps are applied by this primer's `Augment`",
            );
        }
        let listed = |path: &Path| {
            let text = quote::quote!(#path).to_string();
            args.depends_on
                .0
                .iter()
                .any(|dep| quote::quote!(#dep).to_string() == text)
        };
        for path in args.augment_from.0.iter().filter(|path| !listed(path)) {
            errors.push(
                path.span(),
                "a primer in `augment_from` must be in `depends_on`: deltas reach only the products that read it",
            );
        }
        if args.verify_every.is_some() && !args.augment.is_present() {
            errors.push(
                template.span(),
                "`verify_every` verifies products augmented in place: add `augment` (and implement `kck_core::augment::Augment`)",
            );
        }
        if let Some(domain) = &args.domain
            && params.is_empty()
        {
            errors.push(
                domain.span(),
                "a primer without parameters has one product: it has no domain to keep warm",
            );
        }
        if let (Some(stale), Some(expire)) = (policy.stale_after, policy.expire_after)
            && expire < stale
        {
            errors.push(
                template.span(),
                "`expire_after` is shorter than `stale_after`: the value would expire before it is ever served stale",
            );
        }

        errors.into_result()?;
        let (Some(scope_ident), Some(output)) = (scope_ident, output) else {
            // Each missing part pushed an error above.
            return Err(syn::Error::new(sig.ident.span(), "invalid primer"));
        };
        let code_version = match &args.version {
            Some(version) => version.value(),
            None => code_hash(&item),
        };
        let krate = args.krate.unwrap_or_else(|| syn::parse_quote!(::kck_core));
        Ok(Model {
            item,
            name,
            template,
            scope_ident,
            params,
            key_order,
            output,
            policy,
            depends_on: args.depends_on.0,
            domain: args.domain,
            augment: args.augment.is_present(),
            augment_from: args.augment_from.0,
            code_version,
            krate,
        })
    }
}

fn check_param(input: &FnArg, errors: &mut Errors) -> Option<Param> {
    let FnArg::Typed(arg) = input else {
        errors.push(input.span(), "a primer is a free function, not a method");
        return None;
    };
    let ident = match &*arg.pat {
        Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
        other => {
            errors.push(other.span(), "primer parameters must be plain names");
            return None;
        }
    };
    let is_str = match &*arg.ty {
        Type::Reference(reference) => {
            let is_str = reference.mutability.is_none()
                && matches!(&*reference.elem, Type::Path(path) if path.qself.is_none() && path.path.is_ident("str"));
            if !is_str {
                errors.push(
                    arg.ty.span(),
                    "primer parameters are owned values (or `&str`): they become parts of the key",
                );
            }
            true
        }
        _ => false,
    };
    Some(Param {
        ident,
        ty: (*arg.ty).clone(),
        is_str,
    })
}

/// Checks `name/{a}/{b}` against the parameters; returns the name and, for
/// each placeholder, the index of its parameter.
fn check_template(
    template: &LitStr,
    params: &[Param],
    errors: &mut Errors,
) -> (String, Vec<usize>) {
    let text = template.value();
    let span = template.span();
    let mut segments = text.split('/');
    let name = segments.next().unwrap_or_default().to_owned();
    if !is_valid_name(&name) {
        errors.push(
            span,
            format!("the key must start with the primer's name (ASCII letters, digits, `_`, `-`, `.`), found `{name}`"),
        );
    }
    let mut key_order = Vec::new();
    let mut seen = Vec::new();
    for segment in segments {
        let Some(placeholder) = segment
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
        else {
            errors.push(
                span,
                format!("each part of the key after the name must be a `{{placeholder}}`, found `{segment}`"),
            );
            continue;
        };
        if seen.contains(&placeholder) {
            errors.push(
                span,
                format!("placeholder `{{{placeholder}}}` appears twice"),
            );
            continue;
        }
        seen.push(placeholder);
        match params.iter().position(|param| param.ident == placeholder) {
            Some(index) => key_order.push(index),
            None => errors.push(
                span,
                format!("placeholder `{{{placeholder}}}` has no parameter of that name"),
            ),
        }
    }
    for param in params {
        if !seen.iter().any(|placeholder| param.ident == placeholder) {
            errors.push(
                param.ident.span(),
                format!(
                    "parameter `{}` is not in the key: add `/{{{}}}` to the key template",
                    param.ident, param.ident
                ),
            );
        }
    }
    (name, key_order)
}

fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Result"),
        Type::Group(group) => is_result(&group.elem),
        Type::Paren(paren) => is_result(&paren.elem),
        _ => false,
    }
}

/// Keep in sync with `kck_core::key::is_valid_primer_name`.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The primer's code version when none is given: a stable hash of the
/// function's tokens (its attributes, signature and body) without its
/// documentation, so that editing a `///` line, anywhere in the function,
/// keeps the stored products. Comments are not tokens, and spacing is
/// normalized, so neither counts either. FNV-1a, so the hash is the same
/// across compilers and platforms.
///
/// It cannot see what the body calls: a change in another function, a
/// constant or a dependency's crate keeps the version (the primer's
/// `version = "…"` is for that).
fn code_hash(item: &ItemFn) -> String {
    let tokens = without_docs(quote::ToTokens::to_token_stream(item));
    let hash = tokens
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// The tokens without their doc attributes (`#[doc …]` and `#![doc …]`,
/// which is what `///`, `//!` and `/** */` comments become), at any depth.
fn without_docs(tokens: TokenStream) -> TokenStream {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if let Some(len) = doc_attribute_at(&tokens[i..]) {
            i += len;
            continue;
        }
        out.push(match &tokens[i] {
            TokenTree::Group(group) => {
                let mut inner = Group::new(group.delimiter(), without_docs(group.stream()));
                inner.set_span(group.span());
                TokenTree::Group(inner)
            }
            token => token.clone(),
        });
        i += 1;
    }
    out.into_iter().collect()
}

/// How many tokens the doc attribute at the start of `tokens` spans, if
/// one starts there: `#` `[doc …]`, or `#` `!` `[doc …]`.
fn doc_attribute_at(tokens: &[TokenTree]) -> Option<usize> {
    let punct = |token: Option<&TokenTree>, c: char| matches!(token, Some(TokenTree::Punct(punct)) if punct.as_char() == c);
    if !punct(tokens.first(), '#') {
        return None;
    }
    let bang = usize::from(punct(tokens.get(1), '!'));
    match tokens.get(1 + bang)? {
        TokenTree::Group(group)
            if group.delimiter() == Delimiter::Bracket
                && matches!(group.stream().into_iter().next(),
                    Some(TokenTree::Ident(name)) if name == "doc") =>
        {
            Some(2 + bang)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::code_hash;

    #[test]
    fn documentation_does_not_change_the_code_version() {
        let plain: syn::ItemFn = syn::parse_quote! {
            async fn total(store: u32) -> Result<u64, Error> {
                let sales = sales(store).await?;
                Ok(sales.iter().sum())
            }
        };
        let documented: syn::ItemFn = syn::parse_quote! {
            /// The day's total of one store.
            ///
            /// Reads the register sales.
            #[doc = "More words."]
            async fn total(store: u32) -> Result<u64, Error> {
                //! Inner documentation, too.
                /// And documentation on a statement.
                let sales = sales(store).await?;
                Ok(sales.iter().sum())
            }
        };
        assert_eq!(code_hash(&plain), code_hash(&documented));
    }

    #[test]
    fn a_change_of_the_body_or_signature_changes_the_code_version() {
        let base: syn::ItemFn = syn::parse_quote! {
            /// The day's total.
            async fn total(store: u32) -> Result<u64, Error> { Ok(sales(store).await?.iter().sum()) }
        };
        let body: syn::ItemFn = syn::parse_quote! {
            /// The day's total.
            async fn total(store: u32) -> Result<u64, Error> { Ok(sales(store).await?.iter().max()) }
        };
        let signature: syn::ItemFn = syn::parse_quote! {
            /// The day's total.
            async fn total(store: u64) -> Result<u64, Error> { Ok(sales(store).await?.iter().sum()) }
        };
        // An attribute that is not documentation is behaviour.
        let attribute: syn::ItemFn = syn::parse_quote! {
            /// The day's total.
            #[cfg(feature = "fast")]
            async fn total(store: u32) -> Result<u64, Error> { Ok(sales(store).await?.iter().sum()) }
        };
        let base = code_hash(&base);
        for other in [body, signature, attribute] {
            assert_ne!(base, code_hash(&other));
        }
    }

    #[test]
    fn a_doc_attribute_is_told_from_a_lookalike() {
        // Only an attribute named exactly `doc` is documentation.
        let with_docs_attr: syn::ItemFn = syn::parse_quote! {
            #[docs]
            async fn f() -> Result<u8, Error> { Ok(1) }
        };
        let without: syn::ItemFn = syn::parse_quote! {
            async fn f() -> Result<u8, Error> { Ok(1) }
        };
        assert_ne!(code_hash(&with_docs_attr), code_hash(&without));
    }
}

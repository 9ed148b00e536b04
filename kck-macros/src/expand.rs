//! From the model to tokens: a marker type with a key constructor, an
//! `impl Primer`, one registration, and the getter. All behaviour is in
//! `kck_core`; the generated code names only `kck_core::__private`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::Attribute;
use syn::spanned::Spanned;

use crate::model::Model;

pub(crate) fn expand(model: &Model) -> TokenStream {
    let Model {
        item,
        name,
        template,
        params,
        key_order,
        output,
        depends_on,
        domain,
        augment,
        augment_from,
        code_version,
        krate,
        scope_ident,
        ..
    } = model;
    let private = quote!(#krate::__private);
    let vis = &item.vis;
    let ident = &item.sig.ident;
    let (cfgs, attrs): (Vec<&Attribute>, Vec<&Attribute>) = item
        .attrs
        .iter()
        .partition(|attr| attr.path().is_ident("cfg"));

    // Parameters in function order, for the getter and `key`.
    let arg_idents: Vec<_> = params.iter().map(|p| &p.ident).collect();
    let arg_types: Vec<_> = params.iter().map(|p| &p.ty).collect();
    // Parameters in key order, for the `Params` tuple.
    let keyed: Vec<_> = key_order.iter().map(|&i| &params[i]).collect();
    let key_idents: Vec<_> = keyed.iter().map(|p| &p.ident).collect();
    let owned_types: Vec<_> = keyed
        .iter()
        .map(|p| {
            if p.is_str {
                quote_spanned!(p.ty.span()=> ::std::string::String)
            } else {
                let ty = &p.ty;
                quote_spanned!(ty.span()=> #ty)
            }
        })
        .collect();
    let owned_values: Vec<_> = keyed
        .iter()
        .map(|p| {
            let ident = &p.ident;
            if p.is_str {
                quote!(::std::borrow::ToOwned::to_owned(#ident))
            } else {
                quote!(#ident)
            }
        })
        .collect();
    let key_writes: Vec<_> = keyed
        .iter()
        .map(|p| {
            let ident = &p.ident;
            if p.is_str {
                quote!(__kck_writer.str_param(#ident);)
            } else {
                quote_spanned!(p.ty.span()=> __kck_writer.param(&#ident);)
            }
        })
        .collect();
    let call_args: Vec<_> = params
        .iter()
        .map(|p| {
            let ident = &p.ident;
            if p.is_str {
                quote!(&#ident)
            } else {
                quote!(#ident)
            }
        })
        .collect();

    let (domain_fn, with_domain) = match domain {
        Some(path) => (
            domain_tokens(model, path),
            quote!(.with_domain(#ident::__kck_domain)),
        ),
        None => (TokenStream::new(), TokenStream::new()),
    };

    let params_span = item.sig.paren_token.span.join();
    let params_item = quote_spanned!(params_span=> type Params = (#(#owned_types,)*););
    let placeholders: Vec<String> = key_idents.iter().map(ToString::to_string).collect();
    let policy = policy_tokens(model);
    let dependencies = depends_on
        .iter()
        .map(|path| quote_spanned!(path.span()=> <#path as #private::Primer>::NAME));

    let with_augment = if *augment {
        let from = augment_from.iter().map(|upstream| {
            quote_spanned!(upstream.span()=> (
                <#upstream as #private::Primer>::NAME,
                #private::AugmentHandle::map::<#ident, #upstream>(),
            ))
        });
        quote_spanned!(ident.span()=> .with_augment(
            #private::AugmentHandle::of::<#ident>().from(&[#(#from),*])
        ))
    } else {
        TokenStream::new()
    };

    // The user's function, renamed, becomes the body of `compute`.
    let mut compute_fn = item.clone();
    compute_fn.sig.ident = format_ident!("__kck_compute");
    compute_fn.vis = syn::Visibility::Inherited;
    compute_fn
        .attrs
        .retain(|attr| !attr.path().is_ident("doc") && !attr.path().is_ident("cfg"));
    // Parameters are part of the key, so they count as used even when the
    // body ignores them.
    for ident in &arg_idents {
        compute_fn
            .block
            .stmts
            .insert(0, syn::parse_quote!(let _ = &#ident;));
    }

    let getter_params = params.iter().map(|p| {
        let ident = &p.ident;
        let ty = &p.ty;
        quote!(#ident: #ty)
    });
    let marker_doc = format!(
        "The `{name}` primer, keyed `{}`: names it in `depends_on` and builds its keys with \
         [`{ident}::key`]. Read it through [`{ident}`](fn@{ident}).",
        template.value()
    );
    let key_doc = format!("The key of the `{name}` product for these parameters.");

    quote! {
        #(#cfgs)*
        #[doc = #marker_doc]
        #[allow(non_camel_case_types)]
        #vis struct #ident {
            _private: (),
        }

        #(#cfgs)*
        impl #ident {
            #[doc = #key_doc]
            #[allow(dead_code)]
            #vis fn key(#(#arg_idents: #arg_types),*) -> #private::TypedKey<#ident> {
                #private::TypedKey::new((#(#owned_values,)*))
            }

            #domain_fn
        }

        #(#cfgs)*
        impl #private::Primer for #ident {
            #params_item
            type Value = <#output as #private::PrimerOutput>::Value;
            type Error = <#output as #private::PrimerOutput>::Error;

            const NAME: &'static ::core::primitive::str = #name;

            const DEF: &'static #private::PrimerDef = {
                const DEPENDS_ON: &[&::core::primitive::str] = &[#(#dependencies),*];
                &#private::PrimerDef::new(
                    #name,
                    #template,
                    &[#(#placeholders),*],
                    #policy,
                    DEPENDS_ON,
                    #code_version,
                    ::core::concat!(::core::file!(), ":", ::core::line!()),
                )#with_domain
            };

            fn compute<'__kck>(
                __kck_ctx: &'__kck #private::Ctx,
                __kck_params: Self::Params,
            ) -> #private::BoxFuture<'__kck, ::core::result::Result<Self::Value, Self::Error>> {
                #compute_fn
                let (#(#key_idents,)*) = __kck_params;
                ::std::boxed::Box::pin(async move {
                    __kck_compute(__kck_ctx, #(#call_args),*).await
                })
            }
        }

        #(#cfgs)*
        #private::inventory::submit! {
            #private::Registration::new(#private::PrimerHandle::of::<#ident>()#with_augment)
        }

        #(#cfgs)*
        #(#attrs)*
        #[allow(dead_code)]
        #vis async fn #ident(
            #scope_ident: &impl #private::Scope,
            #(#getter_params),*
        ) -> ::core::result::Result<
            ::std::sync::Arc<<#ident as #private::Primer>::Value>,
            #private::Error,
        > {
            #private::get::<#ident>(#scope_ident, |__kck_writer: &mut #private::KeyWriter<'_>| {
                #(#key_writes)*
            })
            .await
        }
    }
}

/// The function behind `domain = path`: reads the domain primer (which has
/// no parameters) through the cache, and makes a key of each item it lists.
/// An item is the parameter itself for a primer of one parameter, else
/// anything convertible into the tuple of parameters, in function order.
fn domain_tokens(model: &Model, domain: &syn::Path) -> TokenStream {
    let krate = &model.krate;
    let private = quote!(#krate::__private);
    let ident = &model.item.sig.ident;
    let idents: Vec<_> = model.params.iter().map(|p| &p.ident).collect();
    let owned: Vec<_> = model
        .params
        .iter()
        .map(|p| {
            if p.is_str {
                quote!(::std::string::String)
            } else {
                let ty = &p.ty;
                quote!(#ty)
            }
        })
        .collect();
    let args = model.params.iter().map(|p| {
        let ident = &p.ident;
        if p.is_str {
            quote!(&#ident)
        } else {
            quote!(#ident)
        }
    });
    let bind = if idents.len() == 1 {
        quote!(let #(#idents)*: #(#owned)*)
    } else {
        quote!(let (#(#idents,)*): (#(#owned,)*))
    };
    let read = quote_spanned!(domain.span()=> #domain(__kck_cache));
    quote! {
        #[doc(hidden)]
        fn __kck_domain(
            __kck_cache: &#private::Cache,
        ) -> #private::BoxFuture<
            '_,
            ::core::result::Result<::std::vec::Vec<#private::Key>, #private::Error>,
        > {
            ::std::boxed::Box::pin(async move {
                let __kck_items = #read.await?;
                let mut __kck_keys = ::std::vec::Vec::new();
                for __kck_item in ::core::iter::IntoIterator::into_iter(&*__kck_items) {
                    #bind = ::core::convert::From::from(::core::clone::Clone::clone(__kck_item));
                    __kck_keys.push(::core::convert::Into::<#private::Key>::into(#ident::key(#(#args),*)));
                }
                ::core::result::Result::Ok(__kck_keys)
            })
        }
    }
}

fn policy_tokens(model: &Model) -> TokenStream {
    let private = {
        let krate = &model.krate;
        quote!(#krate::__private)
    };
    let duration = |d: std::time::Duration| {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        quote!(::core::time::Duration::new(#secs, #nanos))
    };
    let p = &model.policy;
    let mut tokens = quote!(#private::Policy::DEFAULT);
    if let Some(d) = p.refresh {
        let d = duration(d);
        tokens.extend(quote!(.refresh(#d)));
    }
    if let Some(d) = p.stale_after {
        let d = duration(d);
        tokens.extend(quote!(.stale_after(#d)));
    }
    if let Some(d) = p.expire_after {
        let d = duration(d);
        tokens.extend(quote!(.expire_after(#d)));
    }
    if p.on_demand {
        tokens.extend(quote!(.on_demand(true)));
    }
    if p.stale_if_error {
        tokens.extend(quote!(.stale_if_error(true)));
    }
    if p.invalidate_on_change {
        tokens.extend(quote!(.on_change(#private::OnChange::Invalidate)));
    }
    if !p.prime_on_miss {
        tokens.extend(quote!(.prime_on_miss(false)));
    }
    if let Some(pattern) = &p.schedule {
        tokens.extend(quote!(.schedule(#pattern)));
    }
    if let Some(d) = p.verify_every {
        let d = duration(d);
        tokens.extend(quote!(.verify_every(#d)));
    }
    tokens
}

/// The user's function, unchanged, for when the attribute is wrong: the
/// errors are reported and the rest of the crate still sees the function.
pub(crate) fn fallback(item: &syn::ItemFn) -> TokenStream {
    quote!(#item)
}

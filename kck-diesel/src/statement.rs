//! kck's SQL statements, each with its text fixed at compile time.
//!
//! Diesel's `sql_query` cannot be cached as a prepared statement, so every
//! execution would cost an extra round trip to prepare it. A [`Statement`]
//! has its own type per SQL text, which is what diesel's statement cache
//! keys on: each statement is prepared once per connection and then runs in
//! one round trip. Bind parameters are written `{}` in the text.

use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::pg::data_types::PgTimestamp;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Integer, Nullable, SmallInt, Text, Timestamptz, Untyped,
};

/// The SQL text of one statement, with a `{}` for each bind parameter.
pub(crate) trait Sql: Send + Sync + 'static {
    const SQL: &'static str;
}

/// One bind parameter.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Text(String),
    OptText(Option<String>),
    BigInt(i64),
    OptBigInt(Option<i64>),
    Int(i32),
    Bool(bool),
    Bytes(Vec<u8>),
    Time(PgTimestamp),
    OptTime(Option<PgTimestamp>),
    Texts(Vec<String>),
    OptBytesArray(Vec<Option<Vec<u8>>>),
    Times(Vec<PgTimestamp>),
    SmallInts(Vec<i16>),
    BigInts(Vec<i64>),
}

/// A statement of text `S` with its bind parameters, in order. A statement
/// always binds the same kinds in the same places: its prepared form is
/// reused.
pub(crate) struct Statement<S: Sql> {
    binds: Vec<Bind>,
    sql: PhantomData<S>,
}

impl<S: Sql> Statement<S> {
    pub(crate) fn new(binds: Vec<Bind>) -> Self {
        debug_assert_eq!(binds.len(), S::SQL.matches("{}").count(), "{}", S::SQL);
        Statement {
            binds,
            sql: PhantomData,
        }
    }
}

impl<S: Sql> QueryId for Statement<S> {
    type QueryId = S;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<S: Sql> Query for Statement<S> {
    type SqlType = Untyped;
}

impl<S: Sql> QueryFragment<Pg> for Statement<S> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut binds = self.binds.iter();
        for (i, part) in S::SQL.split("{}").enumerate() {
            if i > 0 {
                match binds.next() {
                    Some(Bind::Text(v)) => out.push_bind_param::<Text, _>(v)?,
                    Some(Bind::OptText(v)) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                    Some(Bind::BigInt(v)) => out.push_bind_param::<BigInt, _>(v)?,
                    Some(Bind::OptBigInt(v)) => out.push_bind_param::<Nullable<BigInt>, _>(v)?,
                    Some(Bind::Int(v)) => out.push_bind_param::<Integer, _>(v)?,
                    Some(Bind::Bool(v)) => out.push_bind_param::<Bool, _>(v)?,
                    Some(Bind::Bytes(v)) => out.push_bind_param::<Bytea, _>(v)?,
                    Some(Bind::Time(v)) => out.push_bind_param::<Timestamptz, _>(v)?,
                    Some(Bind::OptTime(v)) => out.push_bind_param::<Nullable<Timestamptz>, _>(v)?,
                    Some(Bind::Texts(v)) => out.push_bind_param::<Array<Text>, _>(v)?,
                    Some(Bind::OptBytesArray(v)) => {
                        out.push_bind_param::<Array<Nullable<Bytea>>, _>(v)?
                    }
                    Some(Bind::Times(v)) => out.push_bind_param::<Array<Timestamptz>, _>(v)?,
                    Some(Bind::SmallInts(v)) => out.push_bind_param::<Array<SmallInt>, _>(v)?,
                    Some(Bind::BigInts(v)) => out.push_bind_param::<Array<BigInt>, _>(v)?,
                    None => {
                        return Err(diesel::result::Error::QueryBuilderError(
                            format!("missing bind parameter {i} of: {}", S::SQL).into(),
                        ));
                    }
                }
            }
            out.push_sql(part);
        }
        Ok(())
    }
}

/// Declares a statement: a unit type implementing [`Sql`].
macro_rules! statements {
    ($( $(#[$doc:meta])* $name:ident = $sql:expr; )*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl $crate::statement::Sql for $name {
            const SQL: &'static str = $sql;
        }
    )*};
}

pub(crate) use statements;

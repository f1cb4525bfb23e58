//! The values a template's properties hold, as serde types: an expression (a scalar or an
//! intrinsic function), a literal (a scalar that must be written out) and a mapping kept in
//! document order.
//!
//! YAML short-form tags (`!Ref X`, `!If [...]`) reach a serde visitor as an enum whose variant is
//! the tag's name, and CloudFormation's long form (`{Ref: X}`, `{"Fn::If": [...]}`) as a mapping of
//! one key: both are read here. A plain `String` field would take `!Ref X` as `"X"`, silently; these
//! types are what keeps an intrinsic from being read as its argument.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor};

/// A property value as CloudFormation reads it: a scalar, or an intrinsic function in its short
/// (`!Ref X`) or long (`{Ref: X}`, `{"Fn::GetAtt": [X, Arn]}`) form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A string, number or boolean, as its text.
    Literal(String),
    Ref(String),
    /// `!Sub` with a pattern alone (no variable map).
    Sub(String),
    GetAtt {
        resource: String,
        attribute: String,
    },
    /// `!If [Condition, then, otherwise]` whose branches are scalars or `!Ref`s. The runner does
    /// not evaluate conditions (resolving one is an error); what reads it interprets its shape.
    If {
        condition: String,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// Any other intrinsic (`!If` with other branches, `!Join`, `!Select`, `!Sub` with a variable map...), named: the
    /// template loads with it, and resolving it is an error.
    Unsupported(String),
}

impl Expr {
    /// The logical id a `!Ref X` or `!GetAtt X.Attribute` names.
    pub fn referenced_id(&self) -> Option<&str> {
        match self {
            Self::Ref(id) | Self::GetAtt { resource: id, .. } => Some(id),
            _ => None,
        }
    }

    fn intrinsic(name: &str, argument: Argument) -> Result<Self, String> {
        match (name, argument) {
            ("Ref", Argument::Text(id)) => Ok(Self::Ref(id)),
            ("Sub", Argument::Text(pattern)) => Ok(Self::Sub(pattern)),
            ("Sub", Argument::List(_)) => Ok(Self::Unsupported("!Sub with a variable map".to_owned())),
            ("GetAtt", Argument::Text(spec)) => match spec.split_once('.') {
                Some((resource, attribute)) => Ok(Self::get_att(resource, attribute)),
                None => Err(format!("!GetAtt {spec}: expected Resource.Attribute")),
            },
            ("GetAtt", Argument::List(parts)) => match parts.as_slice() {
                [Argument::Text(resource), Argument::Text(attribute)] => Ok(Self::get_att(resource, attribute)),
                _ => Err("!GetAtt: expected [Resource, Attribute]".to_owned()),
            },
            ("If", Argument::List(parts)) => match <[Argument; 3]>::try_from(parts) {
                Ok([Argument::Text(condition), then, otherwise]) => match (Self::branch(then), Self::branch(otherwise))
                {
                    (Some(then), Some(otherwise)) => Ok(Self::If {
                        condition,
                        then: Box::new(then),
                        otherwise: Box::new(otherwise),
                    }),
                    _ => Ok(Self::Unsupported("!If".to_owned())),
                },
                _ => Err("!If: expected [Condition, then, otherwise]".to_owned()),
            },
            ("Ref" | "Sub" | "GetAtt" | "If", _) => Err(format!("!{name}: unexpected argument")),
            (other, _) => Ok(Self::Unsupported(format!("!{other}"))),
        }
    }

    /// A branch of `!If`: a scalar or a `!Ref`.
    fn branch(argument: Argument) -> Option<Self> {
        match argument {
            Argument::Text(text) => Some(Self::Literal(text)),
            Argument::Ref(id) => Some(Self::Ref(id)),
            Argument::List(_) | Argument::Skipped => None,
        }
    }

    fn get_att(resource: &str, attribute: &str) -> Self {
        Self::GetAtt {
            resource: resource.to_owned(),
            attribute: attribute.to_owned(),
        }
    }
}

/// Names of the intrinsics whose argument `Expr` reads; any other's is skipped.
fn evaluated(name: &str) -> bool {
    matches!(name, "Ref" | "Sub" | "GetAtt" | "If")
}

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ExprVisitor)
    }
}

struct ExprVisitor;

impl<'de> Visitor<'de> for ExprVisitor {
    type Value = Expr;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar or an intrinsic function (!Ref, !Sub, !GetAtt, ...)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Expr, E> {
        Ok(Expr::Literal(v.to_owned()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Expr, E> {
        Ok(Expr::Literal(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Expr, E> {
        Ok(Expr::Literal(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Expr, E> {
        Ok(Expr::Literal(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Expr, E> {
        Ok(Expr::Literal(v.to_string()))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Expr, A::Error> {
        let (name, argument) = data.variant::<String>()?;
        let argument = if evaluated(&name) {
            argument.newtype_variant::<Argument>()?
        } else {
            argument.newtype_variant::<IgnoredAny>()?;
            Argument::Skipped
        };
        Expr::intrinsic(&name, argument).map_err(de::Error::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expr, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "expected a scalar or an intrinsic function, found an empty mapping",
            ));
        };
        let Some(name) = key.strip_prefix("Fn::").or((key == "Ref").then_some("Ref")) else {
            return Err(de::Error::custom(format!(
                "expected a scalar or an intrinsic function, found a mapping with key {key}"
            )));
        };
        let argument = if evaluated(name) {
            map.next_value::<Argument>()?
        } else {
            map.next_value::<IgnoredAny>()?;
            Argument::Skipped
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!(
                "{key}: an intrinsic function is a mapping of one key"
            )));
        }
        Expr::intrinsic(name, argument).map_err(de::Error::custom)
    }
}

/// What an evaluated intrinsic takes: a name or pattern, or a list (`[Resource, Attribute]`,
/// `[pattern, variables]`, `!If`'s `[Condition, then, otherwise]`), or a `!Ref` inside such a
/// list. Anything else is kept only as "something else".
enum Argument {
    Text(String),
    List(Vec<Argument>),
    Ref(String),
    Skipped,
}

impl<'de> Deserialize<'de> for Argument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ArgumentVisitor)
    }
}

struct ArgumentVisitor;

impl<'de> Visitor<'de> for ArgumentVisitor {
    type Value = Argument;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an intrinsic function's argument")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Argument, E> {
        Ok(Argument::Text(v.to_owned()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Argument, E> {
        Ok(Argument::Text(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Argument, E> {
        Ok(Argument::Text(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Argument, E> {
        Ok(Argument::Text(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Argument, E> {
        Ok(Argument::Text(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Argument, E> {
        Ok(Argument::Skipped)
    }

    fn visit_none<E: de::Error>(self) -> Result<Argument, E> {
        Ok(Argument::Skipped)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Argument, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Argument::List(items))
    }

    /// `{Ref: X}` is a reference; any other mapping is skipped.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Argument, A::Error> {
        let mut found = Argument::Skipped;
        let mut keys = 0;
        while let Some(key) = map.next_key::<String>()? {
            keys += 1;
            found = match (key.as_str(), map.next_value::<Argument>()?) {
                ("Ref", Argument::Text(id)) if keys == 1 => Argument::Ref(id),
                _ => Argument::Skipped,
            };
        }
        Ok(if keys == 1 { found } else { Argument::Skipped })
    }

    /// `!Ref X` is a reference; any other tag is skipped.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Argument, A::Error> {
        let (name, argument) = data.variant::<String>()?;
        if name == "Ref" {
            if let Argument::Text(id) = argument.newtype_variant::<Argument>()? {
                return Ok(Argument::Ref(id));
            }
            return Ok(Argument::Skipped);
        }
        argument.newtype_variant::<IgnoredAny>()?;
        Ok(Argument::Skipped)
    }
}

/// A scalar the template must write out (an event's `Path`, a build's `Binary`, a key schema's
/// attribute): the runner reads it as written, so an intrinsic function here is refused rather
/// than read as its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Literal(pub String);

impl Literal {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LiteralVisitor)
    }
}

struct LiteralVisitor;

impl<'de> Visitor<'de> for LiteralVisitor {
    type Value = Literal;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar written out")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Literal, E> {
        Ok(Literal(v.to_owned()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Literal, E> {
        Ok(Literal(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Literal, E> {
        Ok(Literal(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Literal, E> {
        Ok(Literal(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Literal, E> {
        Ok(Literal(v.to_string()))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Literal, A::Error> {
        let (name, _) = data.variant::<String>()?;
        Err(de::Error::custom(format!(
            "!{name} is not accepted here: the value must be written out"
        )))
    }
}

/// A mapping in document order (routes are matched in the order the template declares them). A
/// key written twice is an error, as it is for CloudFormation, not one value silently dropped.
#[derive(Debug)]
pub(crate) struct Ordered<T>(pub Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> Ordered<T> {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

struct OrderedVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for OrderedVisitor<T> {
    type Value = Ordered<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Ordered<T>, E> {
        Ok(Ordered::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<T>, A::Error> {
        let mut entries: Vec<(String, T)> = Vec::new();
        while let Some(Literal(key)) = map.next_key()? {
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("{key} is written twice")));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Ordered(entries))
    }
}

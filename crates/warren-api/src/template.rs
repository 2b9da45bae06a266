//! Templates: typed parameters, resource ceilings, policy defaults and the template manifest
//! file (`warren-template.json`). Pure: nothing here performs I/O.
//!
//! A template folder holds a devcontainer configuration plus a [`TemplateManifest`]. The
//! manifest declares [`ParamSpec`]s; when a workspace is created (or updated) from the template,
//! [`resolve`] checks the caller's values against those definitions and produces the complete set
//! of values, which [`substitute_params`] then splices into the `devcontainer.json` text wherever
//! `${param:NAME}` appears.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{ErrorCode, WorkspaceName};

/// The manifest's file name, at the root of a template folder.
pub const MANIFEST_FILE: &str = "warren-template.json";

/// The longest allowed parameter name.
pub const MAX_PARAM_NAME_LEN: usize = 63;

const PARAM_NAME_RULE: &str = "parameter names are 1-63 characters of lowercase letters, digits and '_', and start with a letter";

/// Longest duration [`parse_duration`] accepts: 100 years of 365 days. Anything longer is
/// certainly a mistake, and the cap keeps `SystemTime + duration` from overflowing.
const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

const DURATION_HINT: &str = "use forms like 90s, 30m, 8h, 7d or 1h30m";

/// Upper bound on the compiled size of a template's validation regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Longest rendering of a value or name quoted back in an error message.
const MAX_QUOTED_LEN: usize = 80;

// ---------------------------------------------------------------------------------------------
// Parameter types and values
// ---------------------------------------------------------------------------------------------

/// The type of a template parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum ParamType {
    /// A JSON string (`"string"`).
    #[serde(rename = "string")]
    String,
    /// A JSON number (`"number"`).
    #[serde(rename = "number")]
    Number,
    /// `true` or `false` (`"bool"`).
    #[serde(rename = "bool")]
    Bool,
    /// A JSON array of strings (`"list(string)"`).
    #[serde(rename = "list(string)")]
    ListString,
}

impl ParamType {
    /// The type's name as written in a manifest (`string`, `number`, `bool`, `list(string)`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Bool => "bool",
            Self::ListString => "list(string)",
        }
    }

    /// Whether `value` has this type.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Number => value.is_number(),
            Self::Bool => value.is_boolean(),
            Self::ListString => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
        }
    }

    /// What a value of this type looks like, for error messages ("a number").
    fn expected(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Number => "a number",
            Self::Bool => "true or false",
            Self::ListString => "a list of strings",
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parameter value: a JSON string, number, boolean or array of strings (untagged).
///
/// The resolution functions work on [`serde_json::Value`]; this type describes the accepted
/// shapes in the API schema and converts to and from `Value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ParamValue {
    /// A `string` value.
    String(String),
    /// A `number` value.
    Number(f64),
    /// A `bool` value.
    Bool(bool),
    /// A `list(string)` value.
    List(Vec<String>),
}

impl ParamValue {
    /// The parameter type this value has.
    pub fn param_type(&self) -> ParamType {
        match self {
            Self::String(_) => ParamType::String,
            Self::Number(_) => ParamType::Number,
            Self::Bool(_) => ParamType::Bool,
            Self::List(_) => ParamType::ListString,
        }
    }

    /// Converts a JSON value, or returns `None` when it has none of the parameter shapes (null,
    /// an object, or an array holding something other than strings).
    pub fn from_json(value: &Value) -> Option<Self> {
        Some(match value {
            Value::String(s) => Self::String(s.clone()),
            Value::Number(n) => Self::Number(n.as_f64()?),
            Value::Bool(b) => Self::Bool(*b),
            Value::Array(items) => Self::List(
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<_>>()?,
            ),
            Value::Null | Value::Object(_) => return None,
        })
    }
}

impl From<ParamValue> for Value {
    /// Whole numbers within the exactly representable range become JSON integers, so `8.0`
    /// renders as `8`.
    fn from(value: ParamValue) -> Self {
        match value {
            ParamValue::String(s) => Value::String(s),
            ParamValue::Number(n) => {
                const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
                if n.fract() == 0.0 && n.abs() <= EXACT {
                    // Exact: `n` is a whole number of magnitude at most 2^53.
                    Value::from(n as i64)
                } else {
                    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
                }
            }
            ParamValue::Bool(b) => Value::Bool(b),
            ParamValue::List(items) => Value::from(items),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parameter definitions
// ---------------------------------------------------------------------------------------------

/// Whether a number parameter may only grow or only shrink across workspace updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Monotonic {
    /// A new value must be greater than or equal to the previous one.
    Increasing,
    /// A new value must be less than or equal to the previous one.
    Decreasing,
}

/// Validation rules of a parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// Smallest allowed value (number parameters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed value (number parameters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// A regular expression the whole value must match (string parameters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Direction a value may move in when a workspace is updated (number parameters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monotonic: Option<Monotonic>,
    /// Message replacing the default one when `min`, `max`, `regex` or `monotonic` rejects a
    /// value. `{value}`, `{min}` and `{max}` in it are replaced by the respective values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The definition of one template parameter.
///
/// When deserialized, `mutable` defaults to `true` and `required` defaults to `true` exactly when
/// there is no `default`. A parameter that is neither required nor has a default may be left
/// out; it is then absent from the resolved values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(from = "RawParamSpec")]
pub struct ParamSpec {
    /// Name used in `${param:NAME}`, the API and `--param NAME=VALUE`; see
    /// [`is_valid_param_name`].
    pub name: String,
    /// Human-friendly name for user interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the parameter controls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The value type.
    pub r#type: ParamType,
    /// Value used when none is given. Makes the parameter optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The allowed values. For `list(string)` each option is a string and every item of the
    /// list must be one of them (a multi-select).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<Value>>,
    /// Further rules the value must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// Whether the value may change after the workspace is created (default `true`).
    #[serde(default = "default_true")]
    pub mutable: bool,
    /// Whether a value must be given (default: `true` when there is no `default`). A required
    /// parameter cannot also have a default.
    #[schema(required = false)]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

/// The serialized form of [`ParamSpec`], where `required` is optional and its default depends
/// on `default`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParamSpec {
    name: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    r#type: ParamType,
    #[serde(default)]
    default: Option<Value>,
    #[serde(default)]
    options: Option<Vec<Value>>,
    #[serde(default)]
    validation: Option<Validation>,
    #[serde(default = "default_true")]
    mutable: bool,
    #[serde(default)]
    required: Option<bool>,
}

impl From<RawParamSpec> for ParamSpec {
    fn from(raw: RawParamSpec) -> Self {
        let required = raw.required.unwrap_or(raw.default.is_none());
        Self {
            name: raw.name,
            display_name: raw.display_name,
            description: raw.description,
            r#type: raw.r#type,
            default: raw.default,
            options: raw.options,
            validation: raw.validation,
            mutable: raw.mutable,
            required,
        }
    }
}

impl ParamSpec {
    /// A required, mutable parameter with no default, options or validation.
    pub fn new(name: impl Into<String>, r#type: ParamType) -> Self {
        Self {
            name: name.into(),
            display_name: None,
            description: None,
            r#type,
            default: None,
            options: None,
            validation: None,
            mutable: true,
            required: true,
        }
    }

    /// Sets the default value, which also makes the parameter optional.
    pub fn with_default(mut self, default: impl Into<Value>) -> Self {
        self.default = Some(default.into());
        self.required = false;
        self
    }
}

/// Whether `name` is a valid parameter name: 1-63 characters of `[a-z0-9_]`, starting with a
/// letter.
pub fn is_valid_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= MAX_PARAM_NAME_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A rejected parameter definition or value. The API returns it as a 400 with code
/// `invalid_parameter` ([`ParamError::CODE`]); the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[error("parameter `{param}`: {message}")]
pub struct ParamError {
    /// The parameter's name as given (shortened when very long).
    pub param: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ParamError {
    /// The API error code for every parameter error.
    pub const CODE: ErrorCode = ErrorCode::InvalidParameter;

    /// A new error about `param`.
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// Checks the parameter definitions themselves: names are valid and unique; `min`, `max` and
/// `monotonic` appear only on numbers and `regex` only on strings; `min <= max`; the regex
/// compiles; options are non-empty, distinct, of the parameter's type and satisfy the validation
/// rules; a default has the right type, is one of the options and satisfies the rules; and no
/// parameter is both required and defaulted.
pub fn check_specs(specs: &[ParamSpec]) -> Result<(), ParamError> {
    compile(specs).map(drop)
}

/// A parameter definition with its regex compiled.
struct Compiled<'a> {
    spec: &'a ParamSpec,
    regex: Option<Regex>,
}

fn compile(specs: &[ParamSpec]) -> Result<Vec<Compiled<'_>>, ParamError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        if !is_valid_param_name(&spec.name) {
            return Err(ParamError::new(
                clip(&spec.name),
                format!("invalid name: {PARAM_NAME_RULE}"),
            ));
        }
        if !seen.insert(spec.name.as_str()) {
            return Err(ParamError::new(&spec.name, "is defined more than once"));
        }
        out.push(Compiled::new(spec).map_err(|m| ParamError::new(&spec.name, m))?);
    }
    Ok(out)
}

impl<'a> Compiled<'a> {
    /// Checks one definition (all but its name) and compiles its regex.
    fn new(spec: &'a ParamSpec) -> Result<Self, String> {
        let ty = spec.r#type;
        let mut regex = None;
        if let Some(rules) = &spec.validation {
            let numeric_only = [
                ("min", rules.min.is_some()),
                ("max", rules.max.is_some()),
                ("monotonic", rules.monotonic.is_some()),
            ];
            for (field, present) in numeric_only {
                if present && ty != ParamType::Number {
                    return Err(format!(
                        "`validation.{field}` applies only to number parameters, not {ty}"
                    ));
                }
            }
            if let (Some(min), Some(max)) = (rules.min, rules.max) {
                if min > max {
                    return Err(format!(
                        "`validation.min` {min} is greater than `validation.max` {max}"
                    ));
                }
            }
            if let Some(pattern) = &rules.regex {
                if ty != ParamType::String {
                    return Err(format!(
                        "`validation.regex` applies only to string parameters, not {ty}"
                    ));
                }
                regex = Some(compile_whole_match(pattern).map_err(|e| {
                    format!("`validation.regex` is not a valid regular expression: {e}")
                })?);
            }
        }
        let compiled = Self { spec, regex };

        if let Some(options) = &spec.options {
            if options.is_empty() {
                return Err("`options` is empty: list the allowed values or remove it".into());
            }
            let (item_type, note) = match ty {
                ParamType::ListString => (
                    ParamType::String,
                    ": each option of a list(string) parameter is one allowed item",
                ),
                _ => (ty, ""),
            };
            for (i, option) in options.iter().enumerate() {
                if !item_type.accepts(option) {
                    return Err(format!(
                        "option {} is not {}{note}",
                        quote(option),
                        item_type.expected()
                    ));
                }
                if options[..i].iter().any(|o| same_value(o, option)) {
                    return Err(format!("option {} is listed twice", quote(option)));
                }
                compiled
                    .check_rules(option)
                    .map_err(|m| format!("option {} breaks the validation: {m}", quote(option)))?;
            }
        }

        if let Some(default) = &spec.default {
            if spec.required {
                return Err(
                    "has a default but is marked `required`: a default makes a parameter optional, so remove one of them"
                        .into(),
                );
            }
            compiled
                .check_value(default)
                .map_err(|m| format!("invalid default: {m}"))?;
        }
        Ok(compiled)
    }

    /// Checks the type, the options and the validation rules (not `monotonic`).
    fn check_value(&self, value: &Value) -> Result<(), String> {
        let ty = self.spec.r#type;
        if !ty.accepts(value) {
            return Err(format!("expected {}, got {}", ty.expected(), quote(value)));
        }
        self.check_options(value)?;
        self.check_rules(value)
    }

    fn check_options(&self, value: &Value) -> Result<(), String> {
        let Some(options) = &self.spec.options else {
            return Ok(());
        };
        let allowed = |v: &Value| options.iter().any(|o| same_value(o, v));
        let bad = match value {
            Value::Array(items) => items.iter().find(|item| !allowed(item)),
            _ => (!allowed(value)).then_some(value),
        };
        match bad {
            None => Ok(()),
            Some(bad) => {
                let list: Vec<String> = options.iter().map(quote).collect();
                let what = if value.is_array() { "item " } else { "" };
                Err(format!(
                    "{what}{} is not one of the allowed options: {}",
                    quote(bad),
                    list.join(", ")
                ))
            }
        }
    }

    /// Checks `min`, `max` and `regex`, ignoring rules that do not apply to the value's type.
    fn check_rules(&self, value: &Value) -> Result<(), String> {
        let Some(rules) = &self.spec.validation else {
            return Ok(());
        };
        if let Some(n) = value.as_f64() {
            if let Some(min) = rules.min.filter(|min| n < *min) {
                return Err(self.fail(
                    value,
                    format!("{} is below the minimum {min}", quote(value)),
                ));
            }
            if let Some(max) = rules.max.filter(|max| n > *max) {
                return Err(self.fail(
                    value,
                    format!("{} is above the maximum {max}", quote(value)),
                ));
            }
        }
        if let (Some(re), Some(s)) = (&self.regex, value.as_str()) {
            if !re.is_match(s) {
                let pattern = rules.regex.as_deref().unwrap_or_default();
                return Err(self.fail(
                    value,
                    format!("{} does not match the pattern `{pattern}`", quote(value)),
                ));
            }
        }
        Ok(())
    }

    /// Checks a change from `previous` to `value` on an update: immutability and monotonicity.
    fn check_change(&self, previous: &Value, value: &Value) -> Result<(), String> {
        if same_value(previous, value) {
            return Ok(());
        }
        if !self.spec.mutable {
            return Err(format!(
                "cannot be changed once the workspace exists (it is {}, {} was requested)",
                quote(previous),
                quote(value)
            ));
        }
        let direction = self.spec.validation.as_ref().and_then(|r| r.monotonic);
        if let (Some(direction), Some(old), Some(new)) =
            (direction, previous.as_f64(), value.as_f64())
        {
            let (ok, relation, verb) = match direction {
                Monotonic::Increasing => (new >= old, "below", "increase"),
                Monotonic::Decreasing => (new <= old, "above", "decrease"),
            };
            if !ok {
                return Err(self.fail(
                    value,
                    format!(
                        "{} is {relation} the previous value {}: this parameter can only {verb}",
                        quote(value),
                        quote(previous)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The template's custom `validation.error` message when there is one, else `default`.
    fn fail(&self, value: &Value, default: String) -> String {
        let Some(rules) = &self.spec.validation else {
            return default;
        };
        let Some(custom) = &rules.error else {
            return default;
        };
        let mut msg = custom.replace("{value}", &quote(value));
        if let Some(min) = rules.min {
            msg = msg.replace("{min}", &min.to_string());
        }
        if let Some(max) = rules.max {
            msg = msg.replace("{max}", &max.to_string());
        }
        msg
    }
}

/// Compiles `pattern` so that it must match the whole string.
fn compile_whole_match(pattern: &str) -> Result<Regex, regex::Error> {
    let build = |p: &str| RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).build();
    // Compile the pattern on its own first: wrapping an unbalanced pattern like `a)|(b` would
    // otherwise yield a valid but unanchored regex.
    build(pattern)?;
    build(&format!(r"\A(?:{pattern})\z"))
}

/// Equality where numbers compare by value (`8` equals `8.0`).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

/// A value as JSON text, shortened for error messages.
fn quote(value: &Value) -> String {
    clip(&value.to_string())
}

/// `s` cut to [`MAX_QUOTED_LEN`] characters, with `…` when shortened.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED_LEN) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

// ---------------------------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------------------------

/// Produces the complete parameter values for a workspace.
///
/// `given` holds the caller's values; `previous` is `None` when the workspace is created and
/// holds its current values when it is updated. For every defined parameter the value is, in
/// order: the given one, the previous one, the default; a required parameter with none of these
/// is rejected and an optional one with none is left out of the result.
///
/// Rejected: definitions failing [`check_specs`]; given names the template does not define;
/// values of the wrong type, not among the `options` or breaking `min`, `max` or `regex`
/// (whole-string match); and, on update, a changed value of an immutable parameter or a
/// `monotonic` number moving the wrong way. An immutable parameter that has no previous value
/// (added to the template later) may be set. Previous values of parameters the template no
/// longer defines are dropped; carried-over values are checked again, since the template may
/// have changed.
pub fn resolve(
    specs: &[ParamSpec],
    given: &BTreeMap<String, Value>,
    previous: Option<&BTreeMap<String, Value>>,
) -> Result<BTreeMap<String, Value>, ParamError> {
    let compiled = compile(specs)?;
    if let Some(unknown) = given
        .keys()
        .find(|name| !specs.iter().any(|s| &s.name == *name))
    {
        return Err(unknown_param(specs, unknown));
    }

    let mut out = BTreeMap::new();
    for c in &compiled {
        let spec = c.spec;
        let err = |message: String| ParamError::new(&spec.name, message);
        let prev = previous.and_then(|p| p.get(&spec.name));
        let value = match (given.get(&spec.name), prev) {
            (Some(value), prev) => {
                c.check_value(value).map_err(err)?;
                if let Some(prev) = prev {
                    c.check_change(prev, value).map_err(err)?;
                }
                value
            }
            (None, Some(prev)) => {
                c.check_value(prev).map_err(|m| {
                    err(format!(
                        "the current value is no longer valid for this template ({m}); give a new value"
                    ))
                })?;
                prev
            }
            (None, None) => match &spec.default {
                // Checked by `compile`.
                Some(default) => default,
                None if spec.required => {
                    return Err(err(format!(
                        "is required but was not given: expected {}",
                        spec.r#type.expected()
                    )))
                }
                None => continue,
            },
        };
        out.insert(spec.name.clone(), value.clone());
    }
    Ok(out)
}

/// Converts the text of a `--param NAME=VALUE` command-line argument to a JSON value of the
/// parameter's type: a string as is; a number as an integer or decimal (surrounding whitespace
/// ignored); a bool from exactly `true` or `false`; a `list(string)` from a JSON array of strings
/// (`["a","b,c"]`) or from comma-separated items with surrounding whitespace trimmed (`a, b`;
/// empty text is the empty list). The result still has to go through [`resolve`].
pub fn parse_cli_value(spec: &ParamSpec, raw: &str) -> Result<Value, ParamError> {
    let err = |message: String| ParamError::new(&spec.name, message);
    let got = || quote(&Value::String(raw.to_owned()));
    match spec.r#type {
        ParamType::String => Ok(Value::String(raw.to_owned())),
        ParamType::Number => {
            let text = raw.trim();
            let number = if let Ok(i) = text.parse::<i64>() {
                Some(i.into())
            } else if let Ok(u) = text.parse::<u64>() {
                Some(u.into())
            } else {
                text.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
            };
            number
                .map(Value::Number)
                .ok_or_else(|| err(format!("expected a number, got {}", got())))
        }
        ParamType::Bool => match raw.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(err(format!("expected true or false, got {}", got()))),
        },
        ParamType::ListString => {
            let text = raw.trim();
            if text.starts_with('[') {
                let items: Vec<String> = serde_json::from_str(text).map_err(|e| {
                    err(format!(
                        "expected a JSON array of strings, got {}: {e}",
                        got()
                    ))
                })?;
                return Ok(Value::from(items));
            }
            if text.is_empty() {
                return Ok(Value::Array(Vec::new()));
            }
            let items: Vec<&str> = text.split(',').map(str::trim).collect();
            if items.iter().any(|item| item.is_empty()) {
                return Err(err(format!(
                    "empty item in the comma-separated list {}; write items that are empty or contain commas as a JSON array, e.g. [\"a\",\"\"]",
                    got()
                )));
            }
            Ok(Value::from(items))
        }
    }
}

/// Splits one `--param NAME=VALUE` argument and converts the value with [`parse_cli_value`],
/// rejecting a missing `=` and names the template does not define.
pub fn parse_cli_param(specs: &[ParamSpec], arg: &str) -> Result<(String, Value), ParamError> {
    let Some((name, raw)) = arg.split_once('=') else {
        return Err(ParamError::new(
            clip(arg),
            "expected NAME=VALUE, e.g. --param cpus=4",
        ));
    };
    let Some(spec) = specs.iter().find(|s| s.name == name) else {
        return Err(unknown_param(specs, name));
    };
    Ok((spec.name.clone(), parse_cli_value(spec, raw)?))
}

/// The error for a parameter name the template does not define, listing the ones it does.
fn unknown_param(specs: &[ParamSpec], name: &str) -> ParamError {
    let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let message = if known.is_empty() {
        "is not defined by the template, which has no parameters".to_owned()
    } else {
        format!(
            "is not defined by the template (its parameters are: {})",
            known.join(", ")
        )
    };
    ParamError::new(clip(name), message)
}

// ---------------------------------------------------------------------------------------------
// Substitution
// ---------------------------------------------------------------------------------------------

/// Replaces every `${param:NAME}` in a `devcontainer.json` text with the value of `NAME`,
/// rendered as it would appear inside a JSON string: a string's JSON-escaped content without the
/// quotes, a number or bool as JSON text, a list's items joined with `,` and then escaped. Names
/// missing from `values` are left as written. Substituted text is not scanned again.
///
/// Caution: the devcontainer loader later expands `${localEnv:..}` and friends inside string
/// values, after JSON unescaping, so a parameter value containing `${` is expanded too. Callers
/// that substitute before loading must not let untrusted values through unchecked (a `regex`
/// rule, or rejecting `${`).
pub fn substitute_params(text: &str, values: &BTreeMap<String, Value>) -> String {
    const OPEN: &str = "${param:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let value = after
            .find('}')
            .and_then(|end| Some((end, values.get(&after[..end])?)));
        match value {
            Some((end, value)) => {
                out.push_str(&render(value));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(OPEN);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A value rendered as the content of a JSON string.
fn render(value: &Value) -> String {
    let plain = match value {
        Value::String(s) => return escape(s),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    escape(&plain)
}

/// `s` JSON-escaped, without the surrounding quotes.
fn escape(s: &str) -> String {
    let quoted = Value::String(s.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

// ---------------------------------------------------------------------------------------------
// Ceilings
// ---------------------------------------------------------------------------------------------

/// Resource limits. In a manifest, the most a workspace may request; also used for the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ceilings {
    /// CPUs (fractions allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Disk in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

impl Ceilings {
    /// Checks that every limit that is set is positive (and `cpus` finite).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(cpus) = self.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                return Err(format!("`cpus` must be greater than 0, got {cpus}"));
            }
        }
        for (field, value) in self.integer_fields() {
            if value == Some(0) {
                return Err(format!("`{field}` must be greater than 0, got 0"));
            }
        }
        Ok(())
    }

    /// Checks a request against these ceilings. Every resource the request exceeds is named in
    /// the error, e.g. `cpus 9 exceeds the ceiling 8`. Resources without a ceiling, and those
    /// the request leaves unset, are not checked: a caller that treats an unset request as
    /// "unlimited" must fill in the ceiling first.
    pub fn check(&self, requested: &Ceilings) -> Result<(), String> {
        let mut exceeded = Vec::new();
        if let (Some(limit), Some(wanted)) = (self.cpus, requested.cpus) {
            if wanted.is_nan() || wanted > limit {
                exceeded.push(format!("cpus {wanted} exceeds the ceiling {limit}"));
            }
        }
        for ((field, limit), (_, wanted)) in self
            .integer_fields()
            .into_iter()
            .zip(requested.integer_fields())
        {
            if let (Some(limit), Some(wanted)) = (limit, wanted) {
                if wanted > limit {
                    exceeded.push(format!("{field} {wanted} exceeds the ceiling {limit}"));
                }
            }
        }
        if exceeded.is_empty() {
            Ok(())
        } else {
            Err(exceeded.join("; "))
        }
    }

    fn integer_fields(&self) -> [(&'static str, Option<u64>); 3] {
        [
            ("memory_mb", self.memory_mb),
            ("disk_mb", self.disk_mb),
            ("pids", self.pids),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------------

/// What a workspace made from a template costs per hour, in cost units: while it runs (compute)
/// and while it exists without running (storage). Unset rates are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CostRates {
    /// Cost units per hour while running (starting, running, stopping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_per_hour: Option<f64>,
    /// Cost units per hour while stopped (pending, stopped, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_per_hour: Option<f64>,
}

impl CostRates {
    /// Checks that every rate is a non-negative finite number; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, v) in [
            ("running_per_hour", self.running_per_hour),
            ("stopped_per_hour", self.stopped_per_hour),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!(
                        "`{field}` must be a non-negative number of cost units per hour, got {v}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether both rates are unset or zero.
    pub fn is_free(&self) -> bool {
        self.running_per_hour.unwrap_or(0.0) == 0.0 && self.stopped_per_hour.unwrap_or(0.0) == 0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Policy defaults and durations
// ---------------------------------------------------------------------------------------------

pub use crate::policy::PolicyDefaults;

/// Parses a duration written as one or more `<whole number><unit>` parts with units `d`, `h`,
/// `m` and `s` from largest to smallest, each at most once: `90s`, `30m`, `8h`, `7d`, `1h30m`,
/// `1d12h`. Rejects empty text, missing numbers or units, unknown units, signs, fractions,
/// whitespace, zero totals and anything longer than 100 years.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    let bad = |why: String| {
        format!(
            "invalid duration {}: {why}; {DURATION_HINT}",
            quote(&Value::String(s.to_owned()))
        )
    };
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_HINT}"));
    }
    let mut rest = s;
    let mut total: u64 = 0;
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad(format!("expected a whole number at {:?}", clip(rest))));
        }
        let (number, after) = rest.split_at(digits);
        let Some(unit) = after.chars().next() else {
            return Err(bad(format!("{number} has no unit (d, h, m or s)")));
        };
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(bad(format!(
                "unknown unit {unit:?} (expected d, h, m or s)"
            )));
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(bad(
                "units must go from largest to smallest, each at most once".into(),
            ));
        }
        last_unit = Some(index);
        let too_long = || bad("too long (at most 100 years)".into());
        // Only ASCII digits, so parsing fails only on overflow.
        let n: u64 = number.parse().map_err(|_| too_long())?;
        total = n
            .checked_mul(UNITS[index].1)
            .and_then(|secs| total.checked_add(secs))
            .filter(|t| *t <= MAX_DURATION_SECS)
            .ok_or_else(too_long)?;
        rest = &after[unit.len_utf8()..];
    }
    if total == 0 {
        return Err(bad("must be longer than zero".into()));
    }
    Ok(Duration::from_secs(total))
}

/// Formats whole seconds of `d` the way [`parse_duration`] reads them (`1h30m`, `7d`); `0s` for
/// less than a second.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The manifest
// ---------------------------------------------------------------------------------------------

/// The template manifest, [`MANIFEST_FILE`] at the root of a template folder (plain JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateManifest {
    /// The template's name; same rule as workspace names (see [`WorkspaceName`]).
    pub name: String,
    /// Human-friendly name for user interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the template is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The parameters a workspace made from the template takes (none when absent).
    #[serde(default)]
    pub parameters: Vec<ParamSpec>,
    /// The most resources a workspace made from the template may request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceilings: Option<Ceilings>,
    /// Lifetime policy defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyDefaults>,
    /// Hourly cost rates of a workspace made from the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostRates>,
}

impl TemplateManifest {
    /// Parses the manifest text and [validates](Self::validate) it. Syntax and shape errors are
    /// serde's messages, which name the field and give the line and column.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the name, the parameter definitions ([`check_specs`]), the ceilings and the
    /// policy durations.
    pub fn validate(&self) -> Result<(), String> {
        WorkspaceName::new(self.name.as_str()).map_err(|e| {
            // The rule is the workspace-name rule; say what was actually named.
            format!(
                "`name`: {}",
                e.to_string().replacen("workspace name", "template name", 1)
            )
        })?;
        check_specs(&self.parameters).map_err(|e| format!("`parameters`: {e}"))?;
        if let Some(ceilings) = &self.ceilings {
            ceilings
                .validate()
                .map_err(|e| format!("`ceilings`: {e}"))?;
        }
        if let Some(policy) = &self.policy {
            policy.validate().map_err(|e| format!("`policy`: {e}"))?;
        }
        if let Some(cost) = &self.cost {
            cost.validate().map_err(|e| format!("`cost`: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(value: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(value).unwrap()
    }

    fn spec(value: Value) -> ParamSpec {
        serde_json::from_value(value).unwrap()
    }

    fn spec_err(value: Value) -> String {
        check_specs(&[spec(value)]).unwrap_err().to_string()
    }

    fn number(name: &str, validation: Value) -> ParamSpec {
        spec(json!({"name": name, "type": "number", "validation": validation}))
    }

    fn resolve_err(specs: &[ParamSpec], given: Value, previous: Option<Value>) -> ParamError {
        let previous = previous.map(map);
        resolve(specs, &map(given), previous.as_ref()).unwrap_err()
    }

    fn resolve_ok(specs: &[ParamSpec], given: Value, previous: Option<Value>) -> Value {
        let previous = previous.map(map);
        let out = resolve(specs, &map(given), previous.as_ref()).unwrap();
        serde_json::to_value(out).unwrap()
    }

    // --- types and values ------------------------------------------------------------------

    #[test]
    fn param_types_use_the_manifest_spelling() {
        for (ty, text) in [
            (ParamType::String, "string"),
            (ParamType::Number, "number"),
            (ParamType::Bool, "bool"),
            (ParamType::ListString, "list(string)"),
        ] {
            assert_eq!(serde_json::to_value(ty).unwrap(), json!(text));
            assert_eq!(
                serde_json::from_value::<ParamType>(json!(text)).unwrap(),
                ty
            );
            assert_eq!(ty.to_string(), text);
        }
        assert!(serde_json::from_value::<ParamType>(json!("list")).is_err());
        assert!(serde_json::from_value::<ParamType>(json!("String")).is_err());
    }

    #[test]
    fn param_values_are_untagged() {
        let cases = [
            (
                json!("x"),
                ParamValue::String("x".into()),
                ParamType::String,
            ),
            (json!(2.5), ParamValue::Number(2.5), ParamType::Number),
            (json!(true), ParamValue::Bool(true), ParamType::Bool),
            (
                json!(["a", "b"]),
                ParamValue::List(vec!["a".into(), "b".into()]),
                ParamType::ListString,
            ),
        ];
        for (text, value, ty) in cases {
            assert_eq!(
                serde_json::from_value::<ParamValue>(text.clone()).unwrap(),
                value
            );
            assert_eq!(serde_json::to_value(&value).unwrap(), text);
            assert_eq!(ParamValue::from_json(&text), Some(value.clone()));
            assert_eq!(Value::from(value.clone()), text);
            assert_eq!(value.param_type(), ty);
        }
        assert_eq!(Value::from(ParamValue::Number(8.0)), json!(8));
        assert_eq!(Value::from(ParamValue::Number(8.0)).to_string(), "8");
        for bad in [json!(null), json!({"a": 1}), json!([1]), json!(["a", null])] {
            assert_eq!(ParamValue::from_json(&bad), None, "{bad}");
            assert!(serde_json::from_value::<ParamValue>(bad).is_err());
        }
    }

    // --- definitions -----------------------------------------------------------------------

    #[test]
    fn spec_defaults_for_mutable_and_required() {
        let s = spec(json!({"name": "a", "type": "string"}));
        assert!(s.mutable && s.required);
        let s = spec(json!({"name": "a", "type": "string", "default": "x"}));
        assert!(s.mutable && !s.required);
        let s = spec(json!({"name": "a", "type": "string", "required": false, "mutable": false}));
        assert!(!s.mutable && !s.required);
        // `null` is no default.
        assert!(spec(json!({"name": "a", "type": "string", "default": null})).required);
        assert!(
            !ParamSpec::new("a", ParamType::Bool)
                .with_default(true)
                .required
        );
    }

    #[test]
    fn spec_round_trips_and_rejects_unknown_fields() {
        let s = spec(json!({
            "name": "region", "display_name": "Region", "description": "Where",
            "type": "string", "default": "eu", "options": ["eu", "us"],
            "validation": {"regex": "[a-z]+", "error": "bad"}, "mutable": false
        }));
        let text = serde_json::to_value(&s).unwrap();
        assert_eq!(text["type"], json!("string"));
        assert_eq!(text["required"], json!(false));
        assert_eq!(serde_json::from_value::<ParamSpec>(text).unwrap(), s);
        let compact = serde_json::to_value(ParamSpec::new("a", ParamType::Number)).unwrap();
        assert_eq!(
            compact,
            json!({"name": "a", "type": "number", "mutable": true, "required": true})
        );

        let e =
            serde_json::from_value::<ParamSpec>(json!({"name": "a", "type": "string", "dflt": 1}))
                .unwrap_err()
                .to_string();
        assert!(e.contains("unknown field `dflt`"), "{e}");
        let e = serde_json::from_value::<ParamSpec>(
            json!({"name": "a", "type": "number", "validation": {"minimum": 1}}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `minimum`"), "{e}");
        assert!(serde_json::from_value::<ParamSpec>(json!({"name": "a"})).is_err());
    }

    #[test]
    fn param_names() {
        for ok in ["a", "cpus", "disk_size_gb", "x9", &"a".repeat(63)] {
            assert!(is_valid_param_name(ok), "{ok}");
            check_specs(&[ParamSpec::new(ok, ParamType::String)]).unwrap();
        }
        for bad in [
            "",
            "9a",
            "_a",
            "Cpus",
            "disk-size",
            "a b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_param_name(bad), "{bad}");
            let e = check_specs(&[ParamSpec::new(bad, ParamType::String)]).unwrap_err();
            assert!(e.message.contains("invalid name"), "{e}");
            assert!(e.message.contains("start with a letter"), "{e}");
        }
        let long = "A".repeat(500);
        let e = check_specs(&[ParamSpec::new(long, ParamType::String)]).unwrap_err();
        assert!(e.param.chars().count() <= MAX_QUOTED_LEN + 1, "{e}");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let a = ParamSpec::new("a", ParamType::String);
        let b = ParamSpec::new("b", ParamType::String);
        check_specs(&[a.clone(), b]).unwrap();
        let e = check_specs(&[a.clone(), a]).unwrap_err();
        assert_eq!(e.to_string(), "parameter `a`: is defined more than once");
    }

    #[test]
    fn numeric_rules_only_on_numbers() {
        for field in ["min", "max", "monotonic"] {
            let value = if field == "monotonic" {
                json!("increasing")
            } else {
                json!(1)
            };
            let mut rules = serde_json::Map::new();
            rules.insert(field.into(), value);
            check_specs(&[number("n", Value::Object(rules.clone()))]).unwrap();
            for ty in ["string", "bool", "list(string)"] {
                let e = spec_err(json!({"name": "n", "type": ty, "validation": rules}));
                assert!(
                    e.contains(&format!(
                        "`validation.{field}` applies only to number parameters, not {ty}"
                    )),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn regex_only_on_strings_and_must_compile() {
        check_specs(&[spec(
            json!({"name": "s", "type": "string", "validation": {"regex": "^[a-z]+$"}}),
        )])
        .unwrap();
        for ty in ["number", "bool", "list(string)"] {
            let e = spec_err(json!({"name": "s", "type": ty, "validation": {"regex": "a"}}));
            assert!(
                e.contains("`validation.regex` applies only to string parameters"),
                "{e}"
            );
        }
        let e = spec_err(json!({"name": "s", "type": "string", "validation": {"regex": "a("}}));
        assert!(e.contains("not a valid regular expression"), "{e}");
        // Balanced after wrapping, but invalid on its own.
        let e = spec_err(json!({"name": "s", "type": "string", "validation": {"regex": "a)|(b"}}));
        assert!(e.contains("not a valid regular expression"), "{e}");
    }

    #[test]
    fn min_must_not_exceed_max() {
        check_specs(&[number("n", json!({"min": 1, "max": 1}))]).unwrap();
        check_specs(&[number("n", json!({"min": -2.5, "max": 8}))]).unwrap();
        let e = check_specs(&[number("n", json!({"min": 9, "max": 8}))]).unwrap_err();
        assert_eq!(
            e.message,
            "`validation.min` 9 is greater than `validation.max` 8"
        );
    }

    #[test]
    fn defaults_must_fit_type_options_and_rules() {
        let ok = [
            json!({"name": "a", "type": "string", "default": "x"}),
            json!({"name": "a", "type": "number", "default": 2, "validation": {"min": 1, "max": 4}}),
            json!({"name": "a", "type": "bool", "default": false}),
            json!({"name": "a", "type": "list(string)", "default": []}),
            json!({"name": "a", "type": "list(string)", "default": ["x"], "options": ["x", "y"]}),
            json!({"name": "a", "type": "number", "default": 2.0, "options": [1, 2]}),
            json!({"name": "a", "type": "string", "default": "ab", "validation": {"regex": "[a-z]+"}}),
        ];
        for s in ok {
            check_specs(&[spec(s.clone())]).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        let bad = [
            (
                json!({"name": "a", "type": "number", "default": "2"}),
                "invalid default: expected a number, got \"2\"",
            ),
            (
                json!({"name": "a", "type": "string", "default": 2}),
                "invalid default: expected a string, got 2",
            ),
            (
                json!({"name": "a", "type": "bool", "default": "true"}),
                "invalid default: expected true or false",
            ),
            (
                json!({"name": "a", "type": "list(string)", "default": "x"}),
                "invalid default: expected a list of strings",
            ),
            (
                json!({"name": "a", "type": "list(string)", "default": [1]}),
                "invalid default: expected a list of strings",
            ),
            (
                json!({"name": "a", "type": "number", "default": 9, "validation": {"max": 8}}),
                "invalid default: 9 is above the maximum 8",
            ),
            (
                json!({"name": "a", "type": "number", "default": 0, "validation": {"min": 1}}),
                "invalid default: 0 is below the minimum 1",
            ),
            (
                json!({"name": "a", "type": "string", "default": "AB", "validation": {"regex": "[a-z]+"}}),
                "invalid default: \"AB\" does not match the pattern `[a-z]+`",
            ),
            (
                json!({"name": "a", "type": "string", "default": "z", "options": ["x", "y"]}),
                "invalid default: \"z\" is not one of the allowed options: \"x\", \"y\"",
            ),
            (
                json!({"name": "a", "type": "list(string)", "default": ["x", "z"], "options": ["x"]}),
                "invalid default: item \"z\" is not one of the allowed options: \"x\"",
            ),
            (
                json!({"name": "a", "type": "string", "default": "x", "required": true}),
                "has a default but is marked `required`",
            ),
        ];
        for (s, expected) in bad {
            let e = spec_err(s.clone());
            assert!(e.starts_with("parameter `a`: "), "{e}");
            assert!(e.contains(expected), "{s}: {e}");
        }
    }

    #[test]
    fn options_must_be_valid() {
        let ok = [
            json!({"name": "a", "type": "string", "options": ["x", "y"]}),
            json!({"name": "a", "type": "number", "options": [1, 2.5], "validation": {"min": 1}}),
            json!({"name": "a", "type": "bool", "options": [true]}),
            json!({"name": "a", "type": "list(string)", "options": ["x", "y"]}),
        ];
        for s in ok {
            check_specs(&[spec(s.clone())]).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        let bad = [
            (
                json!({"name": "a", "type": "string", "options": []}),
                "`options` is empty",
            ),
            (
                json!({"name": "a", "type": "string", "options": ["x", 1]}),
                "option 1 is not a string",
            ),
            (
                json!({"name": "a", "type": "number", "options": ["1"]}),
                "option \"1\" is not a number",
            ),
            (
                json!({"name": "a", "type": "bool", "options": [null]}),
                "option null is not true or false",
            ),
            (
                json!({"name": "a", "type": "list(string)", "options": [["x"]]}),
                "option [\"x\"] is not a string: each option of a list(string) parameter is one allowed item",
            ),
            (
                json!({"name": "a", "type": "string", "options": ["x", "x"]}),
                "option \"x\" is listed twice",
            ),
            (
                json!({"name": "a", "type": "number", "options": [1, 1.0]}),
                "option 1.0 is listed twice",
            ),
            (
                json!({"name": "a", "type": "number", "options": [1, 9], "validation": {"max": 8}}),
                "option 9 breaks the validation: 9 is above the maximum 8",
            ),
            (
                json!({"name": "a", "type": "string", "options": ["A"], "validation": {"regex": "[a-z]"}}),
                "option \"A\" breaks the validation",
            ),
        ];
        for (s, expected) in bad {
            let e = spec_err(s.clone());
            assert!(e.contains(expected), "{s}: {e}");
        }
    }

    // --- resolution ------------------------------------------------------------------------

    fn sample() -> Vec<ParamSpec> {
        vec![
            spec(
                json!({"name": "cpus", "type": "number", "default": 2, "validation": {"min": 1, "max": 8}}),
            ),
            spec(
                json!({"name": "region", "type": "string", "options": ["eu", "us"], "mutable": false}),
            ),
            spec(json!({"name": "gpu", "type": "bool", "default": false})),
            spec(
                json!({"name": "tools", "type": "list(string)", "default": ["git"], "options": ["git", "make", "gdb"]}),
            ),
            spec(json!({"name": "note", "type": "string", "required": false})),
        ]
    }

    #[test]
    fn resolve_fills_defaults_and_keeps_given_values() {
        let specs = sample();
        assert_eq!(
            resolve_ok(&specs, json!({"region": "eu"}), None),
            json!({"cpus": 2, "region": "eu", "gpu": false, "tools": ["git"]})
        );
        assert_eq!(
            resolve_ok(
                &specs,
                json!({"region": "us", "cpus": 4.5, "gpu": true, "tools": ["make", "gdb"], "note": "hi"}),
                None
            ),
            json!({"cpus": 4.5, "region": "us", "gpu": true, "tools": ["make", "gdb"], "note": "hi"})
        );
        assert_eq!(resolve_ok(&[], json!({}), None), json!({}));
    }

    #[test]
    fn resolve_rejects_unknown_parameters() {
        let e = resolve_err(&sample(), json!({"region": "eu", "cpu": 2}), None);
        assert_eq!(e.param, "cpu");
        assert_eq!(
            e.to_string(),
            "parameter `cpu`: is not defined by the template (its parameters are: cpus, region, gpu, tools, note)"
        );
        let e = resolve_err(&[], json!({"x": 1}), None);
        assert_eq!(
            e.message,
            "is not defined by the template, which has no parameters"
        );
    }

    #[test]
    fn resolve_rejects_missing_required_parameters() {
        let e = resolve_err(&sample(), json!({}), None);
        assert_eq!(
            e.to_string(),
            "parameter `region`: is required but was not given: expected a string"
        );
        // Optional without default: simply absent.
        let out = resolve_ok(&sample(), json!({"region": "eu"}), None);
        assert!(out.get("note").is_none());
    }

    #[test]
    fn resolve_rejects_wrong_types() {
        let specs = sample();
        let cases = [
            (
                json!({"region": "eu", "cpus": "4"}),
                "parameter `cpus`: expected a number, got \"4\"",
            ),
            (
                json!({"region": 1}),
                "parameter `region`: expected a string, got 1",
            ),
            (
                json!({"region": "eu", "gpu": "yes"}),
                "parameter `gpu`: expected true or false, got \"yes\"",
            ),
            (
                json!({"region": "eu", "tools": "git"}),
                "parameter `tools`: expected a list of strings, got \"git\"",
            ),
            (
                json!({"region": "eu", "tools": ["git", 1]}),
                "parameter `tools`: expected a list of strings, got [\"git\",1]",
            ),
            (
                json!({"region": null}),
                "parameter `region`: expected a string, got null",
            ),
        ];
        for (given, expected) in cases {
            assert_eq!(
                resolve_err(&specs, given.clone(), None).to_string(),
                expected,
                "{given}"
            );
        }
    }

    #[test]
    fn resolve_enforces_options() {
        let specs = sample();
        let e = resolve_err(&specs, json!({"region": "asia"}), None);
        assert_eq!(
            e.to_string(),
            "parameter `region`: \"asia\" is not one of the allowed options: \"eu\", \"us\""
        );
        let e = resolve_err(
            &specs,
            json!({"region": "eu", "tools": ["git", "vim"]}),
            None,
        );
        assert_eq!(
            e.to_string(),
            "parameter `tools`: item \"vim\" is not one of the allowed options: \"git\", \"make\", \"gdb\""
        );
        resolve_ok(&specs, json!({"region": "eu", "tools": []}), None);
        // Numbers compare by value.
        let n = [spec(
            json!({"name": "n", "type": "number", "options": [1, 2]}),
        )];
        assert_eq!(resolve_ok(&n, json!({"n": 2.0}), None), json!({"n": 2.0}));
        assert!(resolve(&n, &map(json!({"n": 3})), None).is_err());
    }

    #[test]
    fn resolve_enforces_min_and_max() {
        let specs = sample();
        for ok in [json!(1), json!(8), json!(4.5)] {
            resolve_ok(&specs, json!({"region": "eu", "cpus": ok}), None);
        }
        let e = resolve_err(&specs, json!({"region": "eu", "cpus": 9}), None);
        assert_eq!(e.to_string(), "parameter `cpus`: 9 is above the maximum 8");
        let e = resolve_err(&specs, json!({"region": "eu", "cpus": 0.5}), None);
        assert_eq!(
            e.to_string(),
            "parameter `cpus`: 0.5 is below the minimum 1"
        );
        let e = resolve_err(&specs, json!({"region": "eu", "cpus": -1}), None);
        assert_eq!(e.to_string(), "parameter `cpus`: -1 is below the minimum 1");
    }

    #[test]
    fn resolve_enforces_whole_string_regex() {
        let specs = [spec(
            json!({"name": "branch", "type": "string", "validation": {"regex": "[a-z]+|main"}}),
        )];
        for ok in ["abc", "main"] {
            resolve_ok(&specs, json!({ "branch": ok }), None);
        }
        for bad in ["abc1", "1abc", "", "ab\nc", "main1"] {
            let e = resolve_err(&specs, json!({ "branch": bad }), None);
            assert!(
                e.message
                    .contains("does not match the pattern `[a-z]+|main`"),
                "{e}"
            );
        }
    }

    #[test]
    fn custom_error_messages_replace_the_default() {
        let specs = [
            spec(
                json!({"name": "disk", "type": "number", "validation": {"min": 10, "max": 100, "monotonic": "increasing", "error": "disk must be {min}-{max} GB, not {value}"}}),
            ),
            spec(
                json!({"name": "tag", "type": "string", "validation": {"regex": "v[0-9]+", "error": "use a tag like v1"}}),
            ),
        ];
        let e = resolve_err(&specs, json!({"disk": 5, "tag": "v1"}), None);
        assert_eq!(
            e.to_string(),
            "parameter `disk`: disk must be 10-100 GB, not 5"
        );
        let e = resolve_err(&specs, json!({"disk": 50, "tag": "x"}), None);
        assert_eq!(e.to_string(), "parameter `tag`: use a tag like v1");
        let e = resolve_err(
            &specs,
            json!({"disk": 20}),
            Some(json!({"disk": 30, "tag": "v1"})),
        );
        assert_eq!(
            e.to_string(),
            "parameter `disk`: disk must be 10-100 GB, not 20"
        );
        // Type errors keep the built-in message.
        let e = resolve_err(&specs, json!({"disk": "5", "tag": "v1"}), None);
        assert_eq!(e.message, "expected a number, got \"5\"");
    }

    #[test]
    fn updates_carry_over_unchanged_values() {
        let specs = sample();
        let previous =
            json!({"cpus": 4, "region": "us", "gpu": true, "tools": ["make"], "note": "n"});
        assert_eq!(
            resolve_ok(&specs, json!({}), Some(previous.clone())),
            previous
        );
        assert_eq!(
            resolve_ok(&specs, json!({"cpus": 6}), Some(previous)),
            json!({"cpus": 6, "region": "us", "gpu": true, "tools": ["make"], "note": "n"})
        );
        // A parameter added to the template after creation gets its default; a removed one is
        // dropped.
        assert_eq!(
            resolve_ok(&specs, json!({}), Some(json!({"region": "eu", "old": 1}))),
            json!({"cpus": 2, "region": "eu", "gpu": false, "tools": ["git"]})
        );
    }

    #[test]
    fn carried_over_values_are_checked_again() {
        let e = resolve_err(
            &sample(),
            json!({}),
            Some(json!({"region": "eu", "cpus": 16})),
        );
        assert_eq!(
            e.to_string(),
            "parameter `cpus`: the current value is no longer valid for this template (16 is above the maximum 8); give a new value"
        );
        resolve_ok(
            &sample(),
            json!({"cpus": 8}),
            Some(json!({"region": "eu", "cpus": 16})),
        );
    }

    #[test]
    fn immutable_parameters_cannot_change() {
        let specs = sample();
        let previous = json!({"region": "eu"});
        resolve_ok(&specs, json!({"region": "eu"}), Some(previous.clone()));
        resolve_ok(&specs, json!({}), Some(previous.clone()));
        let e = resolve_err(&specs, json!({"region": "us"}), Some(previous));
        assert_eq!(
            e.to_string(),
            "parameter `region`: cannot be changed once the workspace exists (it is \"eu\", \"us\" was requested)"
        );
        // Not yet set (the parameter is new to the template): it may be set once.
        resolve_ok(&specs, json!({"region": "us"}), Some(json!({})));
        // Immutable numbers compare by value.
        let n = [spec(
            json!({"name": "n", "type": "number", "mutable": false}),
        )];
        resolve_ok(&n, json!({"n": 2.0}), Some(json!({"n": 2})));
    }

    #[test]
    fn monotonic_parameters_move_one_way() {
        let inc = [number("disk", json!({"monotonic": "increasing"}))];
        for ok in [30, 31] {
            resolve_ok(&inc, json!({ "disk": ok }), Some(json!({"disk": 30})));
        }
        let e = resolve_err(&inc, json!({"disk": 20}), Some(json!({"disk": 30})));
        assert_eq!(
            e.to_string(),
            "parameter `disk`: 20 is below the previous value 30: this parameter can only increase"
        );
        let dec = [number("quota", json!({"monotonic": "decreasing"}))];
        for ok in [30, 29] {
            resolve_ok(&dec, json!({ "quota": ok }), Some(json!({"quota": 30})));
        }
        let e = resolve_err(&dec, json!({"quota": 31}), Some(json!({"quota": 30})));
        assert_eq!(
            e.to_string(),
            "parameter `quota`: 31 is above the previous value 30: this parameter can only decrease"
        );
        // No previous value (creation): any value.
        resolve_ok(&dec, json!({"quota": 1000}), None);
        resolve_ok(&dec, json!({"quota": 1000}), Some(json!({})));
    }

    #[test]
    fn resolve_checks_the_definitions_first() {
        let bad = [ParamSpec::new("Bad", ParamType::String)];
        let e = resolve(&bad, &BTreeMap::new(), None).unwrap_err();
        assert!(e.message.contains("invalid name"), "{e}");
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let specs = [ParamSpec::new("n", ParamType::Number)];
        let e = resolve_err(&specs, json!({"n": "x".repeat(1000)}), None);
        assert!(e.message.len() < 200, "{e}");
        assert!(e.message.ends_with('…'), "{e}");
    }

    // --- command line ----------------------------------------------------------------------

    #[test]
    fn cli_values_are_parsed_by_type() {
        let s = ParamSpec::new("s", ParamType::String);
        assert_eq!(parse_cli_value(&s, " a,b ").unwrap(), json!(" a,b "));
        assert_eq!(parse_cli_value(&s, "").unwrap(), json!(""));

        let n = ParamSpec::new("n", ParamType::Number);
        assert_eq!(parse_cli_value(&n, "9").unwrap(), json!(9));
        assert_eq!(parse_cli_value(&n, "9").unwrap().to_string(), "9");
        assert_eq!(parse_cli_value(&n, " -3 ").unwrap(), json!(-3));
        assert_eq!(parse_cli_value(&n, "2.5").unwrap(), json!(2.5));
        assert_eq!(
            parse_cli_value(&n, "18446744073709551615").unwrap(),
            json!(u64::MAX)
        );
        assert_eq!(parse_cli_value(&n, "1e3").unwrap(), json!(1000.0));
        for bad in ["", "abc", "4x", "NaN", "inf", "1e999", "0x10"] {
            let e = parse_cli_value(&n, bad).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("parameter `n`: expected a number, got"),
                "{e}"
            );
        }

        let b = ParamSpec::new("b", ParamType::Bool);
        assert_eq!(parse_cli_value(&b, "true").unwrap(), json!(true));
        assert_eq!(parse_cli_value(&b, "false").unwrap(), json!(false));
        for bad in ["yes", "1", "TRUE", ""] {
            let e = parse_cli_value(&b, bad).unwrap_err();
            assert!(e.message.starts_with("expected true or false"), "{e}");
        }

        let l = ParamSpec::new("l", ParamType::ListString);
        assert_eq!(parse_cli_value(&l, "a,b").unwrap(), json!(["a", "b"]));
        assert_eq!(parse_cli_value(&l, " a , b ").unwrap(), json!(["a", "b"]));
        assert_eq!(parse_cli_value(&l, "a").unwrap(), json!(["a"]));
        assert_eq!(parse_cli_value(&l, "").unwrap(), json!([]));
        assert_eq!(
            parse_cli_value(&l, r#"["a,b", ""]"#).unwrap(),
            json!(["a,b", ""])
        );
        assert_eq!(parse_cli_value(&l, "[]").unwrap(), json!([]));
        let e = parse_cli_value(&l, "a,,b").unwrap_err();
        assert!(e.message.contains("empty item"), "{e}");
        let e = parse_cli_value(&l, "[1]").unwrap_err();
        assert!(
            e.message.starts_with("expected a JSON array of strings"),
            "{e}"
        );
        let e = parse_cli_value(&l, "[\"a\"").unwrap_err();
        assert!(
            e.message.starts_with("expected a JSON array of strings"),
            "{e}"
        );
    }

    #[test]
    fn cli_assignments_are_split_and_checked() {
        let specs = sample();
        assert_eq!(
            parse_cli_param(&specs, "cpus=4").unwrap(),
            ("cpus".into(), json!(4))
        );
        assert_eq!(
            parse_cli_param(&specs, "note=a=b").unwrap(),
            ("note".into(), json!("a=b"))
        );
        assert_eq!(
            parse_cli_param(&specs, "tools=git,make").unwrap().1,
            json!(["git", "make"])
        );
        let e = parse_cli_param(&specs, "cpus").unwrap_err();
        assert_eq!(
            e.to_string(),
            "parameter `cpus`: expected NAME=VALUE, e.g. --param cpus=4"
        );
        let e = parse_cli_param(&specs, "cpu=4").unwrap_err();
        assert!(
            e.message.starts_with("is not defined by the template"),
            "{e}"
        );
        let e = parse_cli_param(&specs, "cpus=many").unwrap_err();
        assert_eq!(
            e.to_string(),
            "parameter `cpus`: expected a number, got \"many\""
        );
        // Parsed values then go through `resolve`.
        let (k, v) = parse_cli_param(&specs, "cpus=9").unwrap();
        let given = BTreeMap::from([(k, v), ("region".into(), json!("eu"))]);
        assert_eq!(
            resolve(&specs, &given, None).unwrap_err().to_string(),
            "parameter `cpus`: 9 is above the maximum 8"
        );
    }

    // --- substitution ----------------------------------------------------------------------

    #[test]
    fn substitution_renders_values_inside_json_strings() {
        let values = map(json!({
            "s": "plain", "q": "say \"hi\"\\now\n", "n": 4, "f": 2.5, "b": true,
            "l": ["a", "b\"c"], "e": [], "u": "é ☃"
        }));
        let text = r#"{"a": "${param:s}", "b": "${param:q}", "c": "--cpus=${param:n} ${param:f} ${param:b}", "d": "${param:l}", "e": "[${param:e}]", "u": "${param:u}"}"#;
        let out = substitute_params(text, &values);
        assert_eq!(
            out,
            r#"{"a": "plain", "b": "say \"hi\"\\now\n", "c": "--cpus=4 2.5 true", "d": "a,b\"c", "e": "[]", "u": "é ☃"}"#
        );
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["b"], json!("say \"hi\"\\now\n"));
        assert_eq!(parsed["d"], json!("a,b\"c"));
    }

    #[test]
    fn substitution_leaves_unknown_and_malformed_references() {
        let values = map(json!({"a": "A", "a_b": "AB"}));
        let cases = [
            ("${param:a}${param:a_b}", "AAB"),
            ("x ${param:nope} y", "x ${param:nope} y"),
            ("${param:a", "${param:a"),
            ("${param:}", "${param:}"),
            ("${param:${param:a}}", "${param:A}"),
            ("${localEnv:HOME} ${param:a}", "${localEnv:HOME} A"),
            ("$${param:a}}", "$A}"),
            ("no refs", "no refs"),
            ("", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(substitute_params(text, &values), expected, "{text}");
        }
        // Substituted text is not expanded again.
        let values = map(json!({"a": "${param:b}", "b": "B"}));
        assert_eq!(substitute_params("${param:a}", &values), "${param:b}");
    }

    // --- ceilings --------------------------------------------------------------------------

    #[test]
    fn ceilings_check_requests() {
        let ceilings = Ceilings {
            cpus: Some(8.0),
            memory_mb: Some(4096),
            disk_mb: None,
            pids: Some(512),
        };
        ceilings.validate().unwrap();
        ceilings.check(&Ceilings::default()).unwrap();
        ceilings
            .check(&Ceilings {
                cpus: Some(8.0),
                memory_mb: Some(4096),
                disk_mb: Some(1 << 40),
                pids: Some(1),
            })
            .unwrap();
        let e = ceilings
            .check(&Ceilings {
                cpus: Some(9.0),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e, "cpus 9 exceeds the ceiling 8");
        let e = ceilings
            .check(&Ceilings {
                cpus: Some(8.5),
                memory_mb: Some(8192),
                disk_mb: None,
                pids: Some(513),
            })
            .unwrap_err();
        assert_eq!(
            e,
            "cpus 8.5 exceeds the ceiling 8; memory_mb 8192 exceeds the ceiling 4096; pids 513 exceeds the ceiling 512"
        );
        let e = ceilings
            .check(&Ceilings {
                cpus: Some(f64::NAN),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.starts_with("cpus NaN exceeds"), "{e}");
        Ceilings::default()
            .check(&Ceilings {
                cpus: Some(1e9),
                ..Default::default()
            })
            .unwrap();
    }

    #[test]
    fn ceilings_must_be_positive() {
        for (c, field) in [
            (
                Ceilings {
                    cpus: Some(0.0),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                Ceilings {
                    cpus: Some(-1.0),
                    ..Default::default()
                },
                "cpus",
            ),
            (
                Ceilings {
                    memory_mb: Some(0),
                    ..Default::default()
                },
                "memory_mb",
            ),
            (
                Ceilings {
                    disk_mb: Some(0),
                    ..Default::default()
                },
                "disk_mb",
            ),
            (
                Ceilings {
                    pids: Some(0),
                    ..Default::default()
                },
                "pids",
            ),
        ] {
            let e = c.validate().unwrap_err();
            assert!(
                e.starts_with(&format!("`{field}` must be greater than 0")),
                "{e}"
            );
        }
        Ceilings {
            cpus: Some(0.5),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert!(serde_json::from_value::<Ceilings>(json!({"cpu": 1})).is_err());
    }

    // --- durations and policy --------------------------------------------------------------

    #[test]
    fn durations_parse() {
        let cases = [
            ("90s", 90),
            ("30m", 1800),
            ("8h", 8 * 3600),
            ("7d", 7 * 86_400),
            ("1h30m", 5400),
            ("1d2h3m4s", 86_400 + 7200 + 180 + 4),
            ("36500d", 36_500 * 86_400),
            ("0h1s", 1),
            ("007m", 420),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_are_rejected() {
        let cases = [
            ("", "empty duration"),
            ("90", "90 has no unit"),
            ("h", "expected a whole number"),
            ("1h30", "30 has no unit"),
            ("1x", "unknown unit 'x'"),
            ("10ms", "expected a whole number"),
            ("1.5h", "unknown unit '.'"),
            ("-1h", "expected a whole number"),
            ("+1h", "expected a whole number"),
            (" 1h", "expected a whole number"),
            ("1h ", "expected a whole number"),
            ("1H", "unknown unit 'H'"),
            ("30m1h", "largest to smallest"),
            ("1h1h", "largest to smallest"),
            ("0s", "longer than zero"),
            ("0d0h", "longer than zero"),
            ("36501d", "too long"),
            ("99999999999999999999s", "too long"),
            ("18446744073709551615d", "too long"),
        ];
        for (text, expected) in cases {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains(expected), "{text:?}: {e}");
            assert!(e.contains(DURATION_HINT), "{text:?}: {e}");
        }
    }

    #[test]
    fn durations_format_back() {
        for text in ["90s", "30m", "8h", "7d", "1h30m", "1d2h3m4s"] {
            let d = parse_duration(text).unwrap();
            let formatted = format_duration(d);
            assert_eq!(parse_duration(&formatted), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_millis(10)), "0s");
    }

    // --- manifest --------------------------------------------------------------------------

    const MANIFEST: &str = r#"{
  "name": "rust-dev",
  "display_name": "Rust development",
  "description": "A Rust toolchain",
  "parameters": [
    {"name": "cpus", "type": "number", "default": 2, "validation": {"min": 1, "max": 8}},
    {"name": "region", "type": "string", "options": ["eu", "us"], "mutable": false}
  ],
  "ceilings": {"cpus": 8, "memory_mb": 16384},
  "policy": {"ttl": "8h", "max_lifetime": "7d"}
}"#;

    #[test]
    fn manifest_parses() {
        let m = TemplateManifest::parse(MANIFEST).unwrap();
        assert_eq!(m.name, "rust-dev");
        assert_eq!(m.display_name.as_deref(), Some("Rust development"));
        assert_eq!(m.parameters.len(), 2);
        assert!(!m.parameters[0].required && m.parameters[1].required);
        assert_eq!(m.ceilings.unwrap().memory_mb, Some(16384));
        assert_eq!(m.policy.as_ref().unwrap().ttl.as_deref(), Some("8h"));
        let again = serde_json::to_string(&m).unwrap();
        assert_eq!(TemplateManifest::parse(&again).unwrap(), m);

        let minimal = TemplateManifest::parse(r#"{"name": "t"}"#).unwrap();
        assert!(
            minimal.parameters.is_empty() && minimal.ceilings.is_none() && minimal.policy.is_none()
        );
        assert_eq!(MANIFEST_FILE, "warren-template.json");
    }

    #[test]
    fn manifest_syntax_and_shape_errors_have_positions() {
        let e = TemplateManifest::parse("{\n  \"name\": \"t\",\n  \"extra\": 1\n}").unwrap_err();
        assert!(
            e.contains("unknown field `extra`") && e.contains("line 3"),
            "{e}"
        );
        let e = TemplateManifest::parse(
            "{\"name\": \"t\",\n \"parameters\": [{\"name\": \"a\", \"type\": \"int\"}]}",
        )
        .unwrap_err();
        assert!(
            e.contains("unknown variant `int`") && e.contains("line 2"),
            "{e}"
        );
        let e = TemplateManifest::parse("{\"name\": \"t\",\n \"parameters\": [{\"name\": \"a\", \"type\": \"string\", \"opts\": []}]}")
            .unwrap_err();
        assert!(
            e.contains("unknown field `opts`") && e.contains("line 2"),
            "{e}"
        );
        let e = TemplateManifest::parse("{\"display_name\": \"x\"}").unwrap_err();
        assert!(e.contains("missing field `name`"), "{e}");
        let e = TemplateManifest::parse("{\"name\": \"t\",}").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e =
            TemplateManifest::parse("{\"name\": \"t\", \"ceilings\": {\"gpus\": 1}}").unwrap_err();
        assert!(e.contains("unknown field `gpus`"), "{e}");
    }

    #[test]
    fn manifest_contents_are_validated() {
        let cases = [
            (
                r#"{"name": "rust dev"}"#,
                "`name`: template name \"rust dev\" contains ' '",
            ),
            (
                r#"{"name": "rust-"}"#,
                "`name`: template name \"rust-\" ends with '-'",
            ),
            (r#"{"name": ""}"#, "`name`: template name is empty"),
            (
                r#"{"name": "t", "parameters": [{"name": "n", "type": "number", "default": 9, "validation": {"max": 8}}]}"#,
                "`parameters`: parameter `n`: invalid default: 9 is above the maximum 8",
            ),
            (
                r#"{"name": "t", "parameters": [{"name": "a", "type": "bool"}, {"name": "a", "type": "bool"}]}"#,
                "`parameters`: parameter `a`: is defined more than once",
            ),
            (
                r#"{"name": "t", "ceilings": {"cpus": 0}}"#,
                "`ceilings`: `cpus` must be greater than 0",
            ),
            (
                r#"{"name": "t", "policy": {"ttl": "8"}}"#,
                "`policy`: `ttl`: invalid duration \"8\"",
            ),
            (
                r#"{"name": "t", "policy": {"autostop": "8d", "max_lifetime": "7d"}}"#,
                "`policy`: `autostop` (8d) is longer than `max_lifetime` (7d)",
            ),
            (
                r#"{"name": "t", "cost": {"running_per_hour": -1}}"#,
                "`cost`: `running_per_hour` must be a non-negative number",
            ),
        ];
        for (text, expected) in cases {
            let e = TemplateManifest::parse(text).unwrap_err();
            assert!(e.starts_with(expected), "{text}: {e}");
        }
        let e = TemplateManifest::parse(r#"{"name": "Rust Dev"}"#).unwrap_err();
        assert!(e.contains("start with a letter"), "{e}");
        let m = TemplateManifest::parse(
            r#"{"name": "t", "cost": {"running_per_hour": 1.5, "stopped_per_hour": 0.05}}"#,
        )
        .unwrap();
        assert_eq!(m.cost.unwrap().running_per_hour, Some(1.5));
        assert!(TemplateManifest::parse(r#"{"name": "t", "cost": {"gpu_per_hour": 1}}"#).is_err());
    }

    // --- schema ----------------------------------------------------------------------------

    #[test]
    fn openapi_schemas_follow_serde() {
        use utoipa::PartialSchema;
        let ty = serde_json::to_string(&ParamType::schema()).unwrap();
        assert!(
            ty.contains("\"list(string)\"") && !ty.contains("ListString"),
            "{ty}"
        );
        let spec = serde_json::to_value(ParamSpec::schema()).unwrap();
        let props = &spec["properties"];
        assert!(props.get("type").is_some(), "{spec}");
        assert!(props.get("r#type").is_none(), "{spec}");
        let required = spec["required"].as_array().unwrap();
        assert!(
            required.contains(&json!("name")) && required.contains(&json!("type")),
            "{spec}"
        );
        assert!(
            !required.contains(&json!("required")) && !required.contains(&json!("mutable")),
            "{spec}"
        );
        let monotonic = serde_json::to_string(&Monotonic::schema()).unwrap();
        assert!(monotonic.contains("\"increasing\""), "{monotonic}");
        let manifest = serde_json::to_value(TemplateManifest::schema()).unwrap();
        assert!(
            manifest["properties"].get("parameters").is_some(),
            "{manifest}"
        );
    }
}

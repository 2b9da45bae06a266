//! `devcontainer-feature.json`: parsing and validation.

use serde::Deserialize;
use serde_json::Value;

use crate::error::FeatureError;

/// A JSON object with its keys in document order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderedMap(pub Vec<(String, Value)>);

impl OrderedMap {
    /// The value of `key`, if present (the last one wins, as in JSON.parse).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<OrderedMap, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    // JSON.parse keeps the first position and the last value of a repeated key.
                    if let Some(slot) = out.iter_mut().find(|(ek, _)| *ek == k) {
                        slot.1 = v;
                    } else {
                        out.push((k, v));
                    }
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Either an object (order kept) or anything else (reported by validation).
#[derive(Deserialize)]
#[serde(untagged)]
enum MaybeMap {
    Map(OrderedMap),
    #[allow(dead_code)]
    Other(Value),
}

#[derive(Deserialize)]
struct KeyOrder {
    options: Option<MaybeMap>,
    #[serde(rename = "containerEnv")]
    container_env: Option<MaybeMap>,
    #[serde(rename = "dependsOn")]
    depends_on: Option<MaybeMap>,
}

/// The type, default and allowed values of one option.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionSpec {
    /// `"type": "boolean"`.
    Boolean {
        default: Option<bool>,
        description: Option<String>,
    },
    /// `"type": "string"`, with a strict `enum` or free-form `proposals`.
    String {
        default: Option<String>,
        enum_values: Option<Vec<String>>,
        proposals: Option<Vec<String>>,
        description: Option<String>,
    },
}

impl OptionSpec {
    /// The default as a JSON value, if the option declares one.
    pub fn default_value(&self) -> Option<Value> {
        match self {
            OptionSpec::Boolean { default, .. } => default.map(Value::Bool),
            OptionSpec::String { default, .. } => default.clone().map(Value::String),
        }
    }
}

/// The lifecycle hook properties a feature may declare, in execution order.
pub const LIFECYCLE_HOOKS: [&str; 5] = [
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
];

/// A parsed, validated `devcontainer-feature.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureManifest {
    /// `id` (required).
    pub id: String,
    /// `version` (semantic version).
    pub version: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `documentationURL`.
    pub documentation_url: Option<String>,
    /// `options`, in document order.
    pub options: Vec<(String, OptionSpec)>,
    /// `containerEnv`, in document order.
    pub container_env: Vec<(String, String)>,
    /// `mounts` (objects or mount strings, as written).
    pub mounts: Vec<Value>,
    /// `init`.
    pub init: Option<bool>,
    /// `privileged`.
    pub privileged: Option<bool>,
    /// `capAdd`.
    pub cap_add: Vec<String>,
    /// `securityOpt`.
    pub security_opt: Vec<String>,
    /// `entrypoint`.
    pub entrypoint: Option<String>,
    /// `customizations`, as written.
    pub customizations: Option<Value>,
    /// `dependsOn`: feature reference → options, in document order.
    pub depends_on: Vec<(String, Value)>,
    /// `installsAfter`.
    pub installs_after: Vec<String>,
    /// `legacyIds`.
    pub legacy_ids: Vec<String>,
    /// `deprecated`.
    pub deprecated: bool,
    /// Lifecycle hooks (`onCreateCommand`, ...) as written (string, array or object).
    pub lifecycle: Vec<(String, Value)>,
    /// The whole document.
    pub raw: Value,
}

impl FeatureManifest {
    /// The declared option `name`, if any.
    pub fn option(&self, name: &str) -> Option<&OptionSpec> {
        self.options.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

/// Parses and validates a `devcontainer-feature.json`. `feature` names the feature in errors.
pub fn parse_manifest(feature: &str, text: &str) -> Result<FeatureManifest, FeatureError> {
    let bad = |reason: String| FeatureError::InvalidManifest {
        feature: feature.to_string(),
        reason,
    };
    let json = warren_devcontainer::jsonc_to_json(text).map_err(&bad)?;
    let raw: Value = serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
    let obj = raw
        .as_object()
        .ok_or_else(|| bad("the document is not a JSON object".to_string()))?;
    let order: KeyOrder = serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;

    let opt_string = |key: &str| -> Result<Option<String>, FeatureError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(format!(
                "`{key}` must be a string, not {}",
                kind(other)
            ))),
        }
    };
    let opt_bool = |key: &str| -> Result<Option<bool>, FeatureError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(bad(format!(
                "`{key}` must be true or false, not {}",
                kind(other)
            ))),
        }
    };
    let string_list = |key: &str| -> Result<Vec<String>, FeatureError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(bad(format!(
                        "`{key}[{i}]` must be a string, not {}",
                        kind(other)
                    ))),
                })
                .collect(),
            Some(other) => Err(bad(format!(
                "`{key}` must be an array of strings, not {}",
                kind(other)
            ))),
        }
    };

    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(bad("`id` is empty".to_string())),
        None | Some(Value::Null) => {
            return Err(bad("the required property `id` is missing".to_string()))
        }
        Some(other) => return Err(bad(format!("`id` must be a string, not {}", kind(other)))),
    };

    let mut options = Vec::new();
    match order.options {
        None => {}
        Some(MaybeMap::Map(map)) => {
            for (name, spec) in map.0 {
                options.push((name.clone(), parse_option(&name, &spec).map_err(&bad)?));
            }
        }
        Some(MaybeMap::Other(Value::Null)) => {}
        Some(MaybeMap::Other(other)) => {
            return Err(bad(format!(
                "`options` must be an object, not {}",
                kind(&other)
            )))
        }
    }

    let mut container_env = Vec::new();
    match order.container_env {
        None | Some(MaybeMap::Other(Value::Null)) => {}
        Some(MaybeMap::Map(map)) => {
            for (k, v) in map.0 {
                match v {
                    Value::String(s) => container_env.push((k, s)),
                    other => {
                        return Err(bad(format!(
                            "`containerEnv.{k}` must be a string, not {}",
                            kind(&other)
                        )))
                    }
                }
            }
        }
        Some(MaybeMap::Other(other)) => {
            return Err(bad(format!(
                "`containerEnv` must be an object, not {}",
                kind(&other)
            )))
        }
    }

    let mut depends_on = Vec::new();
    match order.depends_on {
        None | Some(MaybeMap::Other(Value::Null)) => {}
        Some(MaybeMap::Map(map)) => {
            for (k, v) in map.0 {
                match v {
                    Value::String(_) | Value::Bool(_) | Value::Object(_) => depends_on.push((k, v)),
                    other => {
                        return Err(bad(format!(
                            "`dependsOn.{k}` must be an object of options, a string or a boolean, not {}",
                            kind(&other)
                        )))
                    }
                }
            }
        }
        Some(MaybeMap::Other(other)) => {
            return Err(bad(format!(
                "`dependsOn` must be an object, not {}",
                kind(&other)
            )))
        }
    }

    let mounts = match obj.get("mounts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            for (i, m) in items.iter().enumerate() {
                match m {
                    Value::String(_) => {}
                    Value::Object(o) => {
                        if !matches!(o.get("target"), Some(Value::String(_))) {
                            return Err(bad(format!("`mounts[{i}]` has no string `target`")));
                        }
                    }
                    other => {
                        return Err(bad(format!(
                            "`mounts[{i}]` must be an object or a mount string, not {}",
                            kind(other)
                        )))
                    }
                }
            }
            items.clone()
        }
        Some(other) => {
            return Err(bad(format!(
                "`mounts` must be an array, not {}",
                kind(other)
            )))
        }
    };

    let customizations = match obj.get("customizations") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(other) => {
            return Err(bad(format!(
                "`customizations` must be an object, not {}",
                kind(other)
            )))
        }
    };

    let mut lifecycle = Vec::new();
    for hook in LIFECYCLE_HOOKS {
        match obj.get(hook) {
            None | Some(Value::Null) => {}
            Some(v @ Value::String(_)) => lifecycle.push((hook.to_string(), v.clone())),
            Some(v @ Value::Array(items)) => {
                if items.iter().any(|i| !i.is_string()) {
                    return Err(bad(format!("`{hook}` must be an array of strings")));
                }
                lifecycle.push((hook.to_string(), v.clone()))
            }
            Some(v @ Value::Object(o)) => {
                if o.values().any(|i| {
                    !(i.is_string() || i.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
                }) {
                    return Err(bad(format!(
                        "`{hook}` values must be strings or arrays of strings"
                    )));
                }
                lifecycle.push((hook.to_string(), v.clone()))
            }
            Some(other) => {
                return Err(bad(format!(
                    "`{hook}` must be a string, an array or an object, not {}",
                    kind(other)
                )))
            }
        }
    }

    Ok(FeatureManifest {
        id,
        version: opt_string("version")?,
        name: opt_string("name")?,
        description: opt_string("description")?,
        documentation_url: opt_string("documentationURL")?,
        options,
        container_env,
        mounts,
        init: opt_bool("init")?,
        privileged: opt_bool("privileged")?,
        cap_add: string_list("capAdd")?,
        security_opt: string_list("securityOpt")?,
        entrypoint: opt_string("entrypoint")?,
        customizations,
        depends_on,
        installs_after: string_list("installsAfter")?,
        legacy_ids: string_list("legacyIds")?,
        deprecated: opt_bool("deprecated")?.unwrap_or(false),
        lifecycle,
        raw,
    })
}

fn parse_option(name: &str, spec: &Value) -> Result<OptionSpec, String> {
    let obj = spec
        .as_object()
        .ok_or_else(|| format!("`options.{name}` must be an object, not {}", kind(spec)))?;
    let description = obj
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let strings = |key: &str| -> Result<Option<Vec<String>>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("`options.{name}.{key}` must hold only strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(format!(
                "`options.{name}.{key}` must be an array of strings, not {}",
                kind(other)
            )),
        }
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("boolean") => {
            let default = match obj.get("default") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => {
                    return Err(format!(
                    "`options.{name}.default` must be true or false for a boolean option, not {}",
                    kind(other)
                ))
                }
            };
            Ok(OptionSpec::Boolean {
                default,
                description,
            })
        }
        Some("string") => {
            let default = match obj.get("default") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(format!(
                        "`options.{name}.default` must be a string for a string option, not {}",
                        kind(other)
                    ))
                }
            };
            let enum_values = strings("enum")?;
            if let (Some(values), Some(d)) = (&enum_values, &default) {
                if !values.contains(d) {
                    return Err(format!(
                        "`options.{name}.default` `{d}` is not one of its `enum` values"
                    ));
                }
            }
            Ok(OptionSpec::String {
                default,
                enum_values,
                proposals: strings("proposals")?,
                description,
            })
        }
        Some(other) => Err(format!(
            "`options.{name}.type` must be \"boolean\" or \"string\", not \"{other}\""
        )),
        None => Err(format!("`options.{name}.type` is missing")),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_corpus_manifest_parses() {
        let Some(corpus) = crate::corpus_dir() else {
            eprintln!("corpus not found; skipped");
            return;
        };
        let entries = std::fs::read_dir(corpus.join("features")).unwrap();
        let mut n = 0;
        for e in entries {
            let path = e.unwrap().path().join("devcontainer-feature.json");
            let text = std::fs::read_to_string(&path).unwrap();
            let m = parse_manifest("corpus", &text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!m.id.is_empty());
            n += 1;
        }
        assert!(n >= 20);
    }

    #[test]
    fn options_and_env_keep_document_order() {
        let m = parse_manifest(
            "x",
            r#"{ "id": "x", "version": "1.0.0", // comment
                "options": { "zeta": {"type": "string", "default": "z"}, "alpha": {"type": "boolean", "default": true}, },
                "containerEnv": { "Z": "1", "A": "2" },
                "dependsOn": { "./z": {}, "./a": "1" } }"#,
        )
        .unwrap();
        assert_eq!(m.options[0].0, "zeta");
        assert_eq!(m.options[1].0, "alpha");
        assert_eq!(
            m.container_env,
            vec![("Z".into(), "1".into()), ("A".into(), "2".into())]
        );
        assert_eq!(m.depends_on[0].0, "./z");
    }

    #[test]
    fn invalid_manifests_are_refused_naming_the_feature() {
        for (text, needle) in [
            (r#"{"version": "1"}"#, "`id` is missing"),
            (r#"{"id": 3}"#, "`id` must be a string"),
            (
                r#"{"id": "a", "options": {"o": {"type": "number"}}}"#,
                "\"boolean\" or \"string\"",
            ),
            (
                r#"{"id": "a", "options": {"o": {"type": "boolean", "default": "yes"}}}"#,
                "default",
            ),
            (
                r#"{"id": "a", "options": {"o": {"type": "string", "enum": ["a"], "default": "b"}}}"#,
                "enum",
            ),
            (r#"{"id": "a", "containerEnv": {"A": 1}}"#, "containerEnv.A"),
            (r#"{"id": "a", "capAdd": "SYS_ADMIN"}"#, "capAdd"),
            (r#"{"id": "a", "privileged": "yes"}"#, "privileged"),
            (r#"{"id": "a", "mounts": [{"source": "x"}]}"#, "target"),
            (r#"[1]"#, "not a JSON object"),
            (
                r#"{"id": "a""#,
                "1:11: expected `,` or `}`, found end of file",
            ),
        ] {
            let e = parse_manifest("ghcr.io/x/y/a:1", text).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("ghcr.io/x/y/a:1"), "{msg}");
            assert!(msg.contains(needle), "{text}: {msg}");
            assert!(!msg.contains('\n'));
            assert!(e.hint().is_some());
        }
    }

    #[test]
    fn jsonc_is_accepted() {
        let m = parse_manifest(
            "x",
            r#"{"id": "x", /* c */ "version": "1.0.0", // "name": "commented out"
                "options": {"a": {"type": "string", "default": "//not a comment",},},}"#,
        )
        .unwrap();
        assert_eq!(m.id, "x");
        assert_eq!(
            m.options[0].1.default_value(),
            Some(serde_json::json!("//not a comment"))
        );
    }
}

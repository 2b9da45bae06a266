//! Option values: defaults, validation and the `devcontainer-features.env` lines.

use serde_json::Value;

use crate::error::FeatureError;
use crate::manifest::{kind, FeatureManifest, OptionSpec};

/// The spec's (and the reference's `getSafeId`) option-name to variable-name rule:
/// `str.replace(/[^\w_]/g, '_').replace(/^[\d_]+/g, '_').toUpperCase()`.
pub fn safe_id(name: &str) -> String {
    let mut replaced = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            replaced.push(c);
        } else {
            // JavaScript replaces UTF-16 code units: characters outside the BMP count twice.
            replaced.push('_');
            if (c as u32) > 0xFFFF {
                replaced.push('_');
            }
        }
    }
    let lead = replaced
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(replaced.len());
    let out = if lead > 0 {
        format!("_{}", &replaced[lead..])
    } else {
        replaced
    };
    out.to_ascii_uppercase()
}

/// Option name → value (a string or a boolean), in manifest order.
pub type OptionValues = Vec<(String, Value)>;

/// The option values a feature is installed with: its declared defaults, overlaid with what the
/// user gave (an object of options; a string or boolean is the `version` option when the feature
/// declares one, as in the reference). Values are validated against the declarations.
/// Returns the values (name → string or boolean) and warnings.
pub fn resolve_values(
    feature: &str,
    manifest: &FeatureManifest,
    given: &Value,
) -> Result<(OptionValues, Vec<String>), FeatureError> {
    let invalid = |reason: String, hint: Option<String>| FeatureError::InvalidOption {
        feature: feature.to_string(),
        reason,
        hint,
    };
    let mut values: Vec<(String, Value)> = manifest
        .options
        .iter()
        .filter_map(|(name, spec)| spec.default_value().map(|d| (name.clone(), d)))
        .collect();
    let mut warnings = Vec::new();
    let set = |values: &mut Vec<(String, Value)>, name: &str, v: Value| {
        if let Some(slot) = values.iter_mut().find(|(n, _)| n == name) {
            slot.1 = v;
        } else {
            values.push((name.to_string(), v));
        }
    };
    let user: Vec<(String, Value)> = match given {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Value::Null => Vec::new(),
        Value::String(_) | Value::Bool(_) => {
            if manifest.option("version").is_some() {
                vec![("version".to_string(), given.clone())]
            } else {
                Vec::new()
            }
        }
        other => {
            return Err(invalid(
                format!(
                    "the value must be an object of options, a version string or a boolean, not {}",
                    kind(other)
                ),
                Some("e.g. `\"features\": { \"ghcr.io/devcontainers/features/node:1\": { \"version\": \"20\" } }`".to_string()),
            ))
        }
    };
    for (name, value) in user {
        let value = match value {
            Value::String(_) | Value::Bool(_) => value,
            Value::Number(n) => Value::String(n.to_string()),
            other => {
                return Err(invalid(
                    format!(
                        "option `{name}` must be a string or a boolean, not {}",
                        kind(&other)
                    ),
                    Some(format!(
                        "write e.g. `\"{name}\": \"value\"` or `\"{name}\": true`"
                    )),
                ))
            }
        };
        match manifest.option(&name) {
            None => warnings.push(format!(
                "feature `{feature}` declares no option `{name}`; it is passed as `{}` anyway",
                safe_id(&name)
            )),
            Some(OptionSpec::Boolean { .. }) => {
                let ok = matches!(&value, Value::Bool(_))
                    || matches!(&value, Value::String(s) if s == "true" || s == "false");
                if !ok {
                    return Err(invalid(
                        format!("option `{name}` is a boolean, got {}", display(&value)),
                        Some(format!("write `\"{name}\": true` or `\"{name}\": false`")),
                    ));
                }
            }
            Some(OptionSpec::String {
                enum_values: Some(allowed),
                ..
            }) => {
                let s = display_plain(&value);
                if !allowed.contains(&s) {
                    return Err(invalid(
                        format!(
                            "option `{name}` must be one of {}, got \"{s}\"",
                            allowed
                                .iter()
                                .map(|a| format!("\"{a}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        Some(format!(
                            "pick one of the values listed under `options.{name}.enum` in the \
                             feature's devcontainer-feature.json"
                        )),
                    ));
                }
            }
            Some(OptionSpec::String { .. }) => {}
        }
        set(&mut values, &name, value);
    }
    Ok((values, warnings))
}

fn display_plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// The lines of `devcontainer-features.env`: `NAME="value"` (a shell-sourced file; `\`, `"`,
/// `$` and `` ` `` in values are escaped so that values reach `install.sh` unchanged).
pub fn env_lines(values: &[(String, Value)]) -> Vec<String> {
    values
        .iter()
        .map(|(name, v)| {
            let raw = display_plain(v);
            let mut escaped = String::with_capacity(raw.len());
            for c in raw.chars() {
                if matches!(c, '\\' | '"' | '$' | '`') {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            format!("{}=\"{escaped}\"", safe_id(name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;
    use serde_json::json;

    #[test]
    fn names_follow_the_reference_regexes() {
        for (name, want) in [
            ("version", "VERSION"),
            ("installGradle", "INSTALLGRADLE"),
            ("my-option", "MY_OPTION"),
            ("my.option", "MY_OPTION"),
            ("1st", "_ST"),
            ("__x", "_X"),
            ("_1_a", "_A"),
            ("a_1", "A_1"),
            ("héllo", "H_LLO"),
            ("x😀", "X__"),
            ("", ""),
            ("123", "_"),
        ] {
            assert_eq!(safe_id(name), want, "{name}");
        }
    }

    fn python() -> FeatureManifest {
        parse_manifest(
            "python",
            r#"{"id": "python", "version": "1.0.0", "options": {
                "version": {"type": "string", "enum": ["latest", "3.10", "3.9"], "default": "latest"},
                "pip": {"type": "boolean", "default": true},
                "optimize": {"type": "boolean", "default": true},
                "extra": {"type": "string", "proposals": ["a"]}
            }}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_spec_example_gives_the_spec_env() {
        let (values, warnings) = resolve_values(
            "python",
            &python(),
            &json!({"version": "3.10", "pip": false}),
        )
        .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            env_lines(&values),
            ["VERSION=\"3.10\"", "PIP=\"false\"", "OPTIMIZE=\"true\""]
        );
    }

    #[test]
    fn a_string_value_is_the_version_option() {
        let (values, _) = resolve_values("python", &python(), &json!("3.9")).unwrap();
        assert_eq!(env_lines(&values)[0], "VERSION=\"3.9\"");
        // `true` would be VERSION="true", which this feature's enum does not allow.
        assert!(resolve_values("python", &python(), &json!(true)).is_err());
    }

    #[test]
    fn invalid_values_are_refused_with_a_hint() {
        for given in [
            json!({"version": "2.7"}),
            json!({"pip": "maybe"}),
            json!({"pip": ["x"]}),
            json!(["x"]),
        ] {
            let e = resolve_values("ghcr.io/o/f/python:1", &python(), &given).unwrap_err();
            assert!(e.to_string().contains("ghcr.io/o/f/python:1"), "{e}");
            assert!(!e.to_string().contains('\n'));
        }
        let e = resolve_values("p", &python(), &json!({"version": "2.7"})).unwrap_err();
        assert!(
            e.to_string().contains("\"latest\", \"3.10\", \"3.9\""),
            "{e}"
        );
        assert!(e.hint().unwrap().contains("options.version.enum"));
    }

    #[test]
    fn unknown_options_pass_with_a_warning_and_values_are_escaped() {
        let (values, warnings) = resolve_values(
            "p",
            &python(),
            &json!({"my-flag": "a\"b$c", "extra": "free"}),
        )
        .unwrap();
        assert_eq!(warnings.len(), 1);
        let lines = env_lines(&values);
        assert!(lines.contains(&"EXTRA=\"free\"".to_string()));
        assert!(lines.contains(&"MY_FLAG=\"a\\\"b\\$c\"".to_string()));
    }
}

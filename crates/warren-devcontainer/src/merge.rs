//! Image metadata (`devcontainer.metadata` label) and its merge with the configuration, as the
//! reference CLI's `imageMetadata.ts` does it: entries of the image, then of the Features, then of
//! the devcontainer.json, merged property by property.

use std::collections::BTreeMap;

use crate::config::{parse_command_json, LifecycleCommand};
use crate::json::{Json, Object};
use crate::read::ReadConfiguration;
use crate::{Mount, SubstituteError};

/// The image label that carries dev container metadata.
pub const METADATA_LABEL: &str = "devcontainer.metadata";

/// The devcontainer.json properties an image metadata entry takes from the configuration
/// (the reference's `pickConfigProperties`, in its order).
const PICK_CONFIG: &[&str] = &[
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
    "waitFor",
    "customizations",
    "mounts",
    "containerEnv",
    "containerUser",
    "init",
    "privileged",
    "capAdd",
    "securityOpt",
    "remoteUser",
    "userEnvProbe",
    "remoteEnv",
    "overrideCommand",
    "portsAttributes",
    "otherPortsAttributes",
    "forwardPorts",
    "shutdownAction",
    "updateRemoteUserUID",
    "hostRequirements",
];

/// Configuration properties the merged configuration replaces with collected forms.
const REPLACED: &[&str] = &[
    "customizations",
    "entrypoint",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
    "shutdownAction",
];

/// The lifecycle hooks that metadata entries can carry, in run order.
pub const HOOKS: [&str; 5] = [
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
];

/// Parses a `devcontainer.metadata` label: an array of entries or a single entry. Anything else
/// (not JSON, a scalar) is ignored as the reference ignores it (it only logs it): no entries.
/// Array items that are not objects are dropped.
pub fn parse_metadata_label(label: &str) -> Vec<Json> {
    match Json::parse_strict(label) {
        Some(Json::Array(items)) => items
            .into_iter()
            .filter(|i| matches!(i, Json::Object(_)))
            .collect(),
        Some(obj @ Json::Object(_)) => vec![obj],
        _ => Vec::new(),
    }
}

/// The metadata entries to merge, as the reference's `getDevcontainerMetadata`: the image's
/// entries, the Features' entries (label format: `id` plus Feature properties) and the
/// devcontainer.json's own entry; local variables substituted in all of them with the
/// configuration's context; empty entries dropped.
pub fn metadata_entries(
    read: &ReadConfiguration,
    image: &[Json],
    features: &[serde_json::Value],
    local_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Json>, SubstituteError> {
    let mut out = Vec::new();
    for entry in image.iter().cloned().chain(features.iter().map(Json::from)) {
        out.push(read.substitute_local(&entry, local_env)?);
    }
    let config = read.configuration_with_path();
    let mut own = Object::new();
    if let Some(config) = config.as_object() {
        for key in PICK_CONFIG {
            if let Some(v) = config.get(key) {
                own.insert(*key, v.clone());
            }
        }
    }
    out.push(Json::Object(own));
    out.retain(|e| e.as_object().is_some_and(|o| !o.is_empty()));
    Ok(out)
}

fn field<'a>(entry: &'a Json, key: &str) -> Option<&'a Json> {
    entry.get(key)
}

/// The last entry whose `key` is truthy.
fn last_truthy(entries: &[Json], key: &str) -> Option<Json> {
    entries
        .iter()
        .rev()
        .filter_map(|e| field(e, key))
        .find(|v| v.truthy())
        .cloned()
}

/// The last entry whose `key` is a boolean.
fn last_bool(entries: &[Json], key: &str) -> Option<Json> {
    entries
        .iter()
        .rev()
        .filter_map(|e| field(e, key))
        .find(|v| matches!(v, Json::Bool(_)))
        .cloned()
}

/// `[].concat(...values)`: arrays are spread, anything else is one item.
fn concat<'a>(values: impl Iterator<Item = &'a Json>) -> Vec<Json> {
    let mut out = Vec::new();
    for v in values {
        match v {
            Json::Array(items) => out.extend(items.iter().cloned()),
            other => out.push(other.clone()),
        }
    }
    out
}

/// `[...new Set(items)]` (scalars by value; objects and arrays never equal each other, as in
/// JavaScript where they compare by identity).
fn dedupe(items: Vec<Json>) -> Vec<Json> {
    let mut out: Vec<Json> = Vec::new();
    for item in items {
        let scalar = !matches!(item, Json::Array(_) | Json::Object(_));
        if !(scalar && out.contains(&item)) {
            out.push(item);
        }
    }
    out
}

fn union(entries: &[Json], key: &str) -> Option<Json> {
    let values = dedupe(concat(
        entries
            .iter()
            .filter_map(|e| field(e, key))
            .filter(|v| v.truthy()),
    ));
    (!values.is_empty()).then_some(Json::Array(values))
}

/// `parseInt` of the leading decimal digits (after optional whitespace and sign).
fn parse_int(s: &str) -> Json {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
    match digits.parse::<f64>() {
        Ok(n) => Json::Number(if neg { -n } else { n }),
        Err(_) => Json::Null, // NaN, which JSON.stringify writes as null
    }
}

fn merge_forward_ports(entries: &[Json]) -> Option<Json> {
    let ports = concat(entries.iter().map(|e| match field(e, "forwardPorts") {
        Some(v) if v.truthy() => v,
        _ => &Json::Null,
    }))
    .into_iter()
    .filter(|v| !matches!(v, Json::Null))
    .map(|p| match p {
        Json::Number(n) => Json::String(format!("localhost:{}", crate::json::js_number(n))),
        other => other,
    });
    let ports = dedupe(ports.collect());
    let ports: Vec<Json> = ports
        .into_iter()
        .map(|p| match &p {
            // /localhost:\d+/ is not anchored, and the number is read from index 10 regardless.
            Json::String(s) if has_localhost_port(s) => parse_int(s.get(10..).unwrap_or_default()),
            _ => p,
        })
        .collect();
    (!ports.is_empty()).then_some(Json::Array(ports))
}

fn has_localhost_port(s: &str) -> bool {
    s.match_indices("localhost:")
        .any(|(i, m)| s[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// The reference's `parseBytes`: `^\d+([tgmk]b)?$`, anything else is 0.
pub(crate) fn parse_bytes(v: Option<&Json>) -> f64 {
    let s = match v {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Number(n)) => crate::json::js_number(*n),
        _ => return 0.0,
    };
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return 0.0;
    }
    let unit = match &s[digits..] {
        "" => 1.0,
        "tb" => 2f64.powi(40),
        "gb" => 2f64.powi(30),
        "mb" => 2f64.powi(20),
        "kb" => 2f64.powi(10),
        _ => return 0.0,
    };
    s[..digits].parse::<f64>().unwrap_or(0.0) * unit
}

fn bytes_json(n: f64) -> Option<Json> {
    (n != 0.0).then(|| Json::String(crate::json::js_number(n)))
}

fn merge_gpu(a: Option<Json>, b: Option<&Json>) -> Option<Json> {
    let is_off = |v: &Option<Json>| matches!(v, None | Some(Json::Bool(false)));
    if is_off(&a) {
        return b.cloned();
    }
    if is_off(&b.cloned()) {
        return a;
    }
    let optional = |v: &Json| v.as_str() == Some("optional");
    let (a, b) = (a.unwrap_or_default(), b.cloned().unwrap_or_default());
    if optional(&a) && optional(&b) {
        return Some(Json::String("optional".into()));
    }
    let num = |v: &Json, k: &str| match v.get(k) {
        Some(Json::Number(n)) => *n,
        Some(v) if v.truthy() => f64::NAN,
        _ => 0.0,
    };
    let cores = num(&a, "cores").max(num(&b, "cores"));
    let memory = parse_bytes(a.get("memory")).max(parse_bytes(b.get("memory")));
    let mut o = Object::new();
    if cores != 0.0 && !cores.is_nan() {
        o.insert("cores", Json::Number(cores));
    }
    if let Some(m) = bytes_json(memory) {
        o.insert("memory", m);
    }
    Some(Json::Object(o))
}

fn merge_host_requirements(entries: &[Json]) -> Option<Json> {
    let req = |e: &Json| e.get("hostRequirements").cloned();
    let cpus = entries
        .iter()
        .map(|e| match req(e).as_ref().and_then(|r| r.get("cpus")) {
            Some(Json::Number(n)) => *n,
            _ => 0.0,
        })
        .fold(0.0, f64::max);
    let memory = entries
        .iter()
        .map(|e| parse_bytes(req(e).as_ref().and_then(|r| r.get("memory"))))
        .fold(0.0, f64::max);
    let storage = entries
        .iter()
        .map(|e| parse_bytes(req(e).as_ref().and_then(|r| r.get("storage"))))
        .fold(0.0, f64::max);
    let gpu = entries.iter().fold(None, |acc, e| {
        let g = req(e).and_then(|r| r.get("gpu").cloned());
        merge_gpu(acc, g.as_ref())
    });
    if cpus == 0.0 && memory == 0.0 && storage == 0.0 && !gpu.as_ref().is_some_and(Json::truthy) {
        return None;
    }
    let mut o = Object::new();
    o.insert("cpus", Json::Number(cpus));
    if let Some(m) = bytes_json(memory) {
        o.insert("memory", m);
    }
    if let Some(s) = bytes_json(storage) {
        o.insert("storage", s);
    }
    if let Some(g) = gpu {
        o.insert("gpu", g);
    }
    Some(Json::Object(o))
}

/// The target a mount is deduplicated by (the reference's `parseMount` for strings).
fn mount_target(m: &Json) -> Option<String> {
    match m {
        Json::String(s) => {
            let mut target = None;
            for field in s.split(',') {
                let mut parts = field.split('=');
                let key = parts.next().unwrap_or_default();
                let value = parts.next();
                if matches!(key, "target" | "dst" | "destination") {
                    target = value.map(str::to_owned);
                }
            }
            target
        }
        Json::Object(o) => o
            .get("target")
            .map(|t| t.as_str().map_or_else(|| t.to_json_string(), str::to_owned)),
        _ => None,
    }
}

fn merge_mounts(entries: &[Json]) -> Option<Json> {
    let all = concat(
        entries
            .iter()
            .filter_map(|e| field(e, "mounts"))
            .filter(|v| v.truthy()),
    );
    // Later mounts win by target; order is that of the kept ones.
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Json> = all
        .into_iter()
        .rev()
        .filter(|m| seen.insert(mount_target(m)))
        .collect();
    kept.reverse();
    (!kept.is_empty()).then_some(Json::Array(kept))
}

fn assign_all(entries: &[Json], key: &str) -> Json {
    let mut o = Object::new();
    for e in entries {
        if let Some(Json::Object(v)) = field(e, key) {
            o.assign(v);
        }
    }
    Json::Object(o)
}

/// Merges the configuration with its metadata entries (see [`metadata_entries`]) exactly as the
/// reference's `mergeConfiguration`, giving the `mergedConfiguration` JSON.
pub fn merge_configuration(config: &Json, entries: &[Json]) -> Json {
    let mut merged = config.as_object().cloned().unwrap_or_default();
    for key in REPLACED {
        merged.remove(key);
    }
    let mut customizations = Object::new();
    for e in entries {
        if let Some(Json::Object(c)) = field(e, "customizations") {
            for (k, v) in c.iter() {
                match customizations.get_mut(k) {
                    Some(Json::Array(list)) => list.push(v.clone()),
                    _ => customizations.insert(k.clone(), Json::Array(vec![v.clone()])),
                }
            }
        }
    }
    let mut set = |key: &str, value: Option<Json>| match value {
        Some(v) => merged.insert(key, v),
        // An undefined value is not printed, but an existing key keeps its place; dropping it
        // prints the same JSON.
        None => {
            merged.remove(key);
        }
    };
    let any = |key: &str| {
        Json::Bool(
            entries
                .iter()
                .any(|e| field(e, key).is_some_and(Json::truthy)),
        )
    };
    set("init", Some(any("init")));
    set("privileged", Some(any("privileged")));
    set("capAdd", union(entries, "capAdd"));
    set("securityOpt", union(entries, "securityOpt"));
    let entrypoints: Vec<Json> = entries
        .iter()
        .filter_map(|e| field(e, "entrypoint"))
        .filter(|v| v.truthy())
        .cloned()
        .collect();
    set(
        "entrypoints",
        (!entrypoints.is_empty()).then_some(Json::Array(entrypoints)),
    );
    set("mounts", merge_mounts(entries));
    set(
        "customizations",
        (!customizations.is_empty()).then_some(Json::Object(customizations)),
    );
    for hook in HOOKS {
        let collected: Vec<Json> = entries
            .iter()
            .filter_map(|e| field(e, hook))
            .filter(|v| v.truthy())
            .cloned()
            .collect();
        set(&format!("{hook}s"), Some(Json::Array(collected)));
    }
    set("waitFor", last_truthy(entries, "waitFor"));
    set("remoteUser", last_truthy(entries, "remoteUser"));
    set("containerUser", last_truthy(entries, "containerUser"));
    set("userEnvProbe", last_truthy(entries, "userEnvProbe"));
    set("remoteEnv", Some(assign_all(entries, "remoteEnv")));
    set("containerEnv", Some(assign_all(entries, "containerEnv")));
    set("overrideCommand", last_bool(entries, "overrideCommand"));
    set(
        "portsAttributes",
        Some(assign_all(entries, "portsAttributes")),
    );
    set(
        "otherPortsAttributes",
        last_truthy(entries, "otherPortsAttributes"),
    );
    set("forwardPorts", merge_forward_ports(entries));
    set("shutdownAction", last_truthy(entries, "shutdownAction"));
    set(
        "updateRemoteUserUID",
        last_bool(entries, "updateRemoteUserUID"),
    );
    set("hostRequirements", merge_host_requirements(entries));
    Json::Object(merged)
}

/// Where a lifecycle command comes from: a Feature's id, or `devcontainer.json` for entries without
/// one (the configuration itself and image entries not made by a Feature).
pub type Origin = String;

/// The lifecycle commands of every hook with their origins, in run order (the reference's
/// `lifecycleCommandOriginMapFromMetadata`). Keys are the hook names (`onCreateCommand`, ...).
pub fn lifecycle_origins(entries: &[Json]) -> BTreeMap<&'static str, Vec<(Origin, Json)>> {
    let mut map = BTreeMap::new();
    for hook in HOOKS {
        let list = entries
            .iter()
            .filter_map(|e| {
                let command = field(e, hook).filter(|v| v.truthy())?;
                let origin = match field(e, "id") {
                    Some(Json::String(id)) => id.clone(),
                    _ => "devcontainer.json".to_owned(),
                };
                Some((origin, command.clone()))
            })
            .collect();
        map.insert(hook, list);
    }
    map
}

/// The merged configuration in types the engine consumes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergedConfiguration {
    /// Run an init process (any entry asked for one).
    pub init: bool,
    /// Privileged container (any entry asked for it).
    pub privileged: bool,
    /// Capabilities to add (union, first occurrence order).
    pub cap_add: Vec<String>,
    /// Security options (union).
    pub security_opt: Vec<String>,
    /// Entrypoints of the image and Features, in order; each runs before the container command.
    pub entrypoints: Vec<String>,
    /// Mounts, later entries winning by target (invalid ones are reported in `errors`).
    pub mounts: Vec<Mount>,
    /// Customizations collected per tool, in entry order.
    pub customizations: Vec<(String, Vec<Json>)>,
    /// `onCreateCommand` of every entry with its origin.
    pub on_create_commands: Vec<(Origin, LifecycleCommand)>,
    /// `updateContentCommand` of every entry with its origin.
    pub update_content_commands: Vec<(Origin, LifecycleCommand)>,
    /// `postCreateCommand` of every entry with its origin.
    pub post_create_commands: Vec<(Origin, LifecycleCommand)>,
    /// `postStartCommand` of every entry with its origin.
    pub post_start_commands: Vec<(Origin, LifecycleCommand)>,
    /// `postAttachCommand` of every entry with its origin.
    pub post_attach_commands: Vec<(Origin, LifecycleCommand)>,
    /// The last `waitFor`.
    pub wait_for: Option<String>,
    /// The last `remoteUser`.
    pub remote_user: Option<String>,
    /// The last `containerUser`.
    pub container_user: Option<String>,
    /// The last `userEnvProbe`.
    pub user_env_probe: Option<String>,
    /// `remoteEnv` merged (later entries win; `None` unsets).
    pub remote_env: BTreeMap<String, Option<String>>,
    /// `containerEnv` merged (later entries win).
    pub container_env: BTreeMap<String, String>,
    /// The last boolean `overrideCommand`.
    pub override_command: Option<bool>,
    /// `portsAttributes` merged (raw attribute objects).
    pub ports_attributes: Vec<(String, Json)>,
    /// The last `otherPortsAttributes`.
    pub other_ports_attributes: Option<Json>,
    /// Forwarded ports, deduplicated: numbers (`localhost:N`) or `host:port` strings.
    pub forward_ports: Vec<Json>,
    /// The last `shutdownAction`.
    pub shutdown_action: Option<String>,
    /// The last boolean `updateRemoteUserUID`.
    pub update_remote_user_uid: Option<bool>,
    /// Host requirements, the maximum of every entry's (memory and storage in bytes).
    pub host_requirements: Option<Json>,
    /// Entry values that could not be typed (e.g. a malformed mount from an image label); the
    /// rest of the merge still applies.
    pub errors: Vec<String>,
}

impl MergedConfiguration {
    /// Merges `entries` (see [`metadata_entries`]) into typed values.
    pub fn from_entries(entries: &[Json]) -> Self {
        let merged = merge_configuration(&Json::Object(Object::new()), entries);
        let mut m = MergedConfiguration::default();
        let strings = |v: Option<&Json>| -> Vec<String> {
            v.and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let string = |k: &str| merged.get(k).and_then(Json::as_str).map(str::to_owned);
        m.init = merged.get("init").is_some_and(Json::truthy);
        m.privileged = merged.get("privileged").is_some_and(Json::truthy);
        m.cap_add = strings(merged.get("capAdd"));
        m.security_opt = strings(merged.get("securityOpt"));
        m.entrypoints = strings(merged.get("entrypoints"));
        for mount in merged
            .get("mounts")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            match crate::config::mount_from_json(mount) {
                Ok(mt) => m.mounts.push(mt),
                Err(e) => m.errors.push(format!("mount {mount}: {e}")),
            }
        }
        if let Some(c) = merged.get("customizations").and_then(Json::as_object) {
            m.customizations = c
                .iter()
                .map(|(k, v)| (k.clone(), v.as_array().cloned().unwrap_or_default()))
                .collect();
        }
        let origins = lifecycle_origins(entries);
        for (hook, slot) in [
            ("onCreateCommand", &mut m.on_create_commands),
            ("updateContentCommand", &mut m.update_content_commands),
            ("postCreateCommand", &mut m.post_create_commands),
            ("postStartCommand", &mut m.post_start_commands),
            ("postAttachCommand", &mut m.post_attach_commands),
        ] {
            for (origin, command) in &origins[hook] {
                match parse_command_json(command) {
                    Ok(Some(c)) => slot.push((origin.clone(), c)),
                    Ok(None) => {}
                    Err(e) => m.errors.push(format!("{hook} from {origin}: {e}")),
                }
            }
        }
        m.wait_for = string("waitFor");
        m.remote_user = string("remoteUser");
        m.container_user = string("containerUser");
        m.user_env_probe = string("userEnvProbe");
        if let Some(env) = merged.get("remoteEnv").and_then(Json::as_object) {
            m.remote_env = env
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
                .collect();
        }
        if let Some(env) = merged.get("containerEnv").and_then(Json::as_object) {
            m.container_env = env
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
        }
        m.override_command = merged.get("overrideCommand").and_then(Json::as_bool);
        if let Some(p) = merged.get("portsAttributes").and_then(Json::as_object) {
            m.ports_attributes = p.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        m.other_ports_attributes = merged.get("otherPortsAttributes").cloned();
        m.forward_ports = merged
            .get("forwardPorts")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        m.shutdown_action = string("shutdownAction");
        m.update_remote_user_uid = merged.get("updateRemoteUserUID").and_then(Json::as_bool);
        m.host_requirements = merged.get("hostRequirements").cloned();
        m
    }
}

impl ReadConfiguration {
    /// Merges this configuration with its image's label (`devcontainer.metadata`, if any) and the
    /// Features' metadata entries (label format), as `read-configuration
    /// --include-merged-configuration` does: the `mergedConfiguration` JSON and its typed form.
    pub fn merge(
        &self,
        image_label: Option<&str>,
        features: &[serde_json::Value],
        local_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Json, MergedConfiguration), SubstituteError> {
        let image = image_label.map(parse_metadata_label).unwrap_or_default();
        let entries = metadata_entries(self, &image, features, local_env)?;
        let json = merge_configuration(&self.configuration_with_path(), &entries);
        Ok((json, MergedConfiguration::from_entries(&entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(text: &str) -> Json {
        Json::parse_strict(text).unwrap()
    }

    #[test]
    fn labels_parse_as_array_or_object_and_bad_ones_are_ignored() {
        assert_eq!(parse_metadata_label(r#"[{"a":1},{"b":2}]"#).len(), 2);
        assert_eq!(parse_metadata_label(r#"{"a":1}"#), vec![j(r#"{"a":1}"#)]);
        assert!(parse_metadata_label("{not json").is_empty());
        assert!(parse_metadata_label("42").is_empty());
        assert!(parse_metadata_label("").is_empty());
    }

    #[test]
    fn merge_follows_the_reference_rules() {
        let entries = [
            j(
                r#"{"id":"f","capAdd":["A"],"init":true,"postCreateCommand":"f","mounts":["source=a,target=/t,type=volume"],"forwardPorts":[3000,"db:5432"],"hostRequirements":{"cpus":2,"memory":"1gb","gpu":true}}"#,
            ),
            j(
                r#"{"capAdd":["B","A"],"postCreateCommand":["x"],"mounts":[{"source":"b","target":"/t","type":"volume"}],"forwardPorts":["localhost:3000",8080],"remoteUser":"u","hostRequirements":{"cpus":4,"gpu":"optional"},"overrideCommand":false}"#,
            ),
        ];
        let merged =
            merge_configuration(&j(r#"{"image":"x","postCreateCommand":"gone"}"#), &entries);
        assert_eq!(
            merged.to_json_string(),
            r#"{"image":"x","init":true,"privileged":false,"capAdd":["A","B"],"mounts":[{"source":"b","target":"/t","type":"volume"}],"onCreateCommands":[],"updateContentCommands":[],"postCreateCommands":["f",["x"]],"postStartCommands":[],"postAttachCommands":[],"remoteUser":"u","remoteEnv":{},"containerEnv":{},"overrideCommand":false,"portsAttributes":{},"forwardPorts":[3000,"db:5432",8080],"hostRequirements":{"cpus":4,"memory":"1073741824","gpu":{}}}"#
        );
        let typed = MergedConfiguration::from_entries(&entries);
        assert!(typed.init);
        assert_eq!(typed.cap_add, ["A", "B"]);
        assert_eq!(
            typed.post_create_commands,
            vec![
                ("f".to_owned(), LifecycleCommand::Shell("f".into())),
                (
                    "devcontainer.json".to_owned(),
                    LifecycleCommand::Exec(vec!["x".into()])
                )
            ]
        );
        assert_eq!(typed.mounts.len(), 1);
        assert_eq!(typed.mounts[0].source.as_deref(), Some("b"));
        assert_eq!(typed.override_command, Some(false));
        assert!(typed.errors.is_empty(), "{:?}", typed.errors);
    }

    #[test]
    fn features_sit_between_the_image_and_the_config_and_are_substituted() {
        let (read, _) = crate::read_str(
            r#"{"image": "x", "postCreateCommand": "config"}"#,
            std::path::Path::new("/p/.devcontainer/devcontainer.json"),
            std::path::Path::new("/p"),
            std::path::Path::new("/p"),
            &|_| None,
        )
        .unwrap();
        let feature = serde_json::json!({"id": "ghcr.io/x/y:1", "postCreateCommand": "in ${localWorkspaceFolder}"});
        let (json, typed) = read
            .merge(
                Some(r#"{"postCreateCommand": "image"}"#),
                &[feature],
                &|_| None,
            )
            .unwrap();
        assert_eq!(
            json.get("postCreateCommands").unwrap().to_json_string(),
            r#"["image","in /p","config"]"#
        );
        let origins: Vec<_> = typed
            .post_create_commands
            .iter()
            .map(|(o, _)| o.as_str())
            .collect();
        assert_eq!(
            origins,
            ["devcontainer.json", "ghcr.io/x/y:1", "devcontainer.json"]
        );
    }

    #[test]
    fn byte_sizes_parse_as_the_reference_does() {
        for (s, n) in [
            ("16gb", 17179869184.0),
            ("100", 100.0),
            ("8GB", 0.0),
            ("1tb", 1099511627776.0),
            ("x", 0.0),
        ] {
            assert_eq!(parse_bytes(Some(&Json::String(s.into()))), n, "{s}");
        }
    }
}

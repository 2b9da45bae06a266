//! Install order: the reference's round-based algorithm (`computeDependsOnInstallationOrder`).
//!
//! Each round takes every queued feature whose hard (`dependsOn`) and soft (`installsAfter`)
//! dependencies are installed, keeps those with the highest `roundPriority` (from
//! `overrideFeatureInstallOrder`), sorts them with the reference's comparator and commits them.
//! A round that commits nothing means a cycle.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::FeatureError;

/// What identifies a feature's source for equality and sorting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SourceKey {
    Oci {
        registry: String,
        namespace: String,
        id: String,
        resource: String,
        tag: Option<String>,
        /// The manifest digest (empty for soft-dependency and override nodes, never compared).
        digest: String,
    },
    Tarball {
        url: String,
    },
    Local {
        path: String,
    },
}

impl SourceKey {
    fn type_name(&self) -> &'static str {
        match self {
            SourceKey::Oci { .. } => "oci",
            SourceKey::Tarball { .. } => "direct-tarball",
            SourceKey::Local { .. } => "file-path",
        }
    }
}

/// A feature in the dependency graph (one per occurrence; equal ones are merged by `equals`).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The reference as written by the user or the depending feature.
    pub user_id: String,
    /// The options given with the reference.
    pub options: Value,
    pub source: SourceKey,
    /// `[id, ...legacyIds]` from the feature's manifest (None for soft and override nodes).
    pub aliases: Option<Vec<String>>,
    /// Hard dependencies, as indices into the node arena.
    pub depends_on: Vec<usize>,
    /// Soft dependencies (`installsAfter`), not fetched.
    pub installs_after: Vec<Node>,
    pub round_priority: usize,
}

impl Node {
    pub fn leaf(user_id: &str, options: Value, source: SourceKey) -> Self {
        Node {
            user_id: user_id.to_string(),
            options,
            source,
            aliases: None,
            depends_on: Vec::new(),
            installs_after: Vec::new(),
            round_priority: 0,
        }
    }
}

/// Rank of a character in an approximation of ICU's root collation (what JavaScript's
/// `localeCompare` uses): whitespace, punctuation and symbols, digits, then letters
/// case-insensitively.
fn collation_key(c: char) -> (u8, u32) {
    const PUNCT: &str = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$";
    if c.is_whitespace() {
        (0, c as u32)
    } else if let Some(i) = PUNCT.find(c) {
        (1, i as u32)
    } else if c.is_ascii_digit() {
        (3, c as u32)
    } else if c.is_alphabetic() {
        let lower = c.to_lowercase().next().unwrap_or(c);
        (4, lower as u32)
    } else {
        (2, c as u32)
    }
}

/// `a.localeCompare(b)`, approximated: primary (case-insensitive) comparison first, then lower
/// case before upper case.
pub(crate) fn locale_cmp(a: &str, b: &str) -> Ordering {
    let primary = a
        .chars()
        .map(collation_key)
        .cmp(b.chars().map(collation_key));
    primary.then_with(|| {
        let tertiary = |s: &str| s.chars().map(|c| c.is_uppercase()).collect::<Vec<_>>();
        tertiary(a).cmp(&tertiary(b))
    })
}

fn sign(o: Ordering) -> i32 {
    match o {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

fn js_typeof(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Null | Value::Array(_) | Value::Object(_) => "object",
    }
}

/// The reference's `optionsCompareTo`.
pub(crate) fn options_cmp(a: &Value, b: &Value) -> i32 {
    match (a, b) {
        (Value::String(a), Value::String(b)) => sign(locale_cmp(a, b)),
        (Value::Bool(a), Value::Bool(b)) => sign(a.cmp(b)),
        (Value::Object(a), Value::Object(b)) => {
            if a.len() != b.len() {
                return a.len() as i32 - b.len() as i32;
            }
            // `keys.sort()` orders by UTF-16 code units; serde_json's map is sorted by bytes,
            // which is the same order for the BMP.
            let ak: Vec<&String> = a.keys().collect();
            let bk: Vec<&String> = b.keys().collect();
            for (ka, kb) in ak.iter().zip(bk.iter()) {
                if ka != kb {
                    return sign(locale_cmp(ka, kb));
                }
                let (va, vb) = (&a[ka.as_str()], &b[kb.as_str()]);
                match (va, vb) {
                    (Value::String(x), Value::String(y)) => {
                        let v = sign(locale_cmp(x, y));
                        if v != 0 {
                            return v;
                        }
                    }
                    (Value::Bool(x), Value::Bool(y)) => {
                        let v = sign(x.cmp(y));
                        if v != 0 {
                            return v;
                        }
                    }
                    _ => {}
                }
            }
            0
        }
        _ => sign(locale_cmp(js_typeof(a), js_typeof(b))),
    }
}

/// The reference's `ociResourceCompareTo`.
fn oci_resource_cmp(a: &Node, b: &Node) -> i32 {
    let (
        SourceKey::Oci {
            registry: ar,
            namespace: an,
            id: aid,
            ..
        },
        SourceKey::Oci {
            registry: br,
            namespace: bn,
            id: bid,
            ..
        },
    ) = (&a.source, &b.source)
    else {
        return 0;
    };
    let a_prefix = format!("{ar}/{an}");
    let b_prefix = format!("{br}/{bn}");
    if a_prefix != b_prefix {
        return sign(locale_cmp(&a_prefix, &b_prefix));
    }
    let a_ids = a.aliases.clone().unwrap_or_else(|| vec![aid.clone()]);
    let b_ids = b.aliases.clone().unwrap_or_else(|| vec![bid.clone()]);
    let common = a_ids.iter().any(|x| b_ids.contains(x));
    if !common {
        return sign(locale_cmp(aid, bid));
    }
    0
}

/// The reference's `compareTo`: negative when `a` installs before `b` within a round.
pub(crate) fn compare(a: &Node, b: &Node) -> i32 {
    if a.source.type_name() != b.source.type_name() {
        return sign(locale_cmp(&a.user_id, &b.user_id));
    }
    match (&a.source, &b.source) {
        (
            SourceKey::Oci {
                tag: at,
                digest: ad,
                ..
            },
            SourceKey::Oci {
                tag: bt,
                digest: bd,
                ..
            },
        ) => {
            if ad == bd && options_cmp(&a.options, &b.options) == 0 {
                return 0;
            }
            let r = oci_resource_cmp(a, b);
            if r != 0 {
                return r;
            }
            if let (Some(at), Some(bt)) = (at, bt) {
                if at != bt {
                    return sign(locale_cmp(at, bt));
                }
            }
            let o = options_cmp(&a.options, &b.options);
            if o != 0 {
                return o;
            }
            if ad != bd {
                return sign(locale_cmp(ad, bd));
            }
            0
        }
        (SourceKey::Local { path: ap }, SourceKey::Local { path: bp }) => {
            let p = sign(locale_cmp(ap, bp));
            if p != 0 {
                return p;
            }
            options_cmp(&a.options, &b.options)
        }
        (SourceKey::Tarball { url: au }, SourceKey::Tarball { url: bu }) => {
            let u = sign(locale_cmp(au, bu));
            if u != 0 {
                return u;
            }
            options_cmp(&a.options, &b.options)
        }
        _ => 0,
    }
}

/// Feature equality: same kind of source and `compare` says equal.
pub(crate) fn equals(a: &Node, b: &Node) -> bool {
    a.source.type_name() == b.source.type_name() && compare(a, b) == 0
}

/// Whether `node` satisfies the soft dependency (or override entry) `soft`. With
/// `match_node_aliases`, an OCI node also satisfies a soft dependency named by one of its own
/// legacy ids in the same namespace (the reference gets the same effect by fetching the soft
/// dependency's manifest; Warren does not fetch features that are not installed).
pub(crate) fn satisfies_soft(node: &Node, soft: &Node, match_node_aliases: bool) -> bool {
    match (&node.source, &soft.source) {
        (
            SourceKey::Oci {
                resource: nr,
                registry: nreg,
                namespace: nns,
                ..
            },
            SourceKey::Oci {
                resource: sr,
                registry: sreg,
                namespace: sns,
                id: sid,
                ..
            },
        ) => {
            let prefix = format!("{sreg}/{sns}");
            nr == sr
                || soft
                    .aliases
                    .as_ref()
                    .is_some_and(|a| a.iter().any(|l| format!("{prefix}/{l}") == *nr))
                || (match_node_aliases
                    && nreg == sreg
                    && nns == sns
                    && node.aliases.as_ref().is_some_and(|a| a.contains(sid)))
        }
        (SourceKey::Local { path: a }, SourceKey::Local { path: b }) => a == b,
        (SourceKey::Tarball { url: a }, SourceKey::Tarball { url: b }) => a == b,
        _ => false,
    }
}

/// Applies `overrideFeatureInstallOrder`: entry `i` of `n` gives priority `n - i` to every
/// queued feature it matches (the highest wins).
pub(crate) fn apply_override(arena: &mut [Node], worklist: &[usize], overrides: &[Node]) {
    let n = overrides.len();
    for (i, o) in overrides.iter().enumerate().rev() {
        let priority = n - i;
        for &w in worklist {
            if satisfies_soft(&arena[w], o, false) {
                arena[w].round_priority = arena[w].round_priority.max(priority);
            }
        }
    }
}

/// Computes the install order of `worklist` (indices into `arena`, already deduplicated).
pub(crate) fn install_order(
    arena: &mut [Node],
    worklist: &[usize],
) -> Result<Vec<usize>, FeatureError> {
    let mut worklist: Vec<usize> = worklist.to_vec();
    // Drop soft dependencies on features that are not going to be installed.
    for &w in &worklist {
        let keep: Vec<Node> = arena[w]
            .installs_after
            .iter()
            .filter(|soft| {
                worklist
                    .iter()
                    .any(|&n| satisfies_soft(&arena[n], soft, true))
            })
            .cloned()
            .collect();
        arena[w].installs_after = keep;
    }
    let mut installed: Vec<usize> = Vec::new();
    while !worklist.is_empty() {
        let ready = |n: usize| -> bool {
            let node = &arena[n];
            node.depends_on
                .iter()
                .all(|&d| installed.iter().any(|&i| equals(&arena[i], &arena[d])))
                && node.installs_after.iter().all(|s| {
                    installed
                        .iter()
                        .any(|&i| satisfies_soft(&arena[i], s, true))
                })
        };
        let mut round: Vec<usize> = worklist.iter().copied().filter(|&n| ready(n)).collect();
        if round.is_empty() {
            return Err(FeatureError::Cycle {
                cycle: describe_cycle(arena, &worklist, &installed),
            });
        }
        let max = round
            .iter()
            .map(|&n| arena[n].round_priority)
            .max()
            .unwrap_or(0);
        round.retain(|&n| arena[n].round_priority == max);
        worklist.retain(|&w| !round.iter().any(|&r| equals(&arena[r], &arena[w])));
        round.sort_by(|&a, &b| compare(&arena[a], &arena[b]).cmp(&0));
        installed.extend(round);
    }
    Ok(installed)
}

/// Names a cycle among the features left when no round can be formed: `a -> b -> a`.
fn describe_cycle(arena: &[Node], remaining: &[usize], installed: &[usize]) -> String {
    // Edges: a feature to the remaining features that would satisfy one of its unmet
    // dependencies.
    let edges = |n: usize| -> Vec<usize> {
        let node = &arena[n];
        let mut out = Vec::new();
        for &d in &node.depends_on {
            if installed.iter().any(|&i| equals(&arena[i], &arena[d])) {
                continue;
            }
            out.extend(
                remaining
                    .iter()
                    .copied()
                    .filter(|&r| equals(&arena[r], &arena[d])),
            );
        }
        for s in &node.installs_after {
            if installed
                .iter()
                .any(|&i| satisfies_soft(&arena[i], s, true))
            {
                continue;
            }
            out.extend(
                remaining
                    .iter()
                    .copied()
                    .filter(|&r| satisfies_soft(&arena[r], s, true)),
            );
        }
        out
    };
    for &start in remaining {
        // Depth-first search for a path back to a node on the current path.
        let mut path = vec![start];
        let mut iters = vec![edges(start).into_iter()];
        let mut seen = vec![start];
        while let Some(it) = iters.last_mut() {
            match it.next() {
                Some(next) => {
                    if let Some(pos) = path.iter().position(|&p| p == next) {
                        let mut names: Vec<&str> = path[pos..]
                            .iter()
                            .map(|&p| arena[p].user_id.as_str())
                            .collect();
                        names.push(arena[next].user_id.as_str());
                        return names.join(" -> ");
                    }
                    if !seen.contains(&next) {
                        seen.push(next);
                        path.push(next);
                        iters.push(edges(next).into_iter());
                    }
                }
                None => {
                    iters.pop();
                    path.pop();
                }
            }
        }
    }
    remaining
        .iter()
        .map(|&r| arena[r].user_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oci(user_id: &str, id: &str, tag: &str, digest: &str) -> Node {
        let mut n = Node::leaf(
            user_id,
            json!({}),
            SourceKey::Oci {
                registry: "ghcr.io".into(),
                namespace: "o/f".into(),
                id: id.into(),
                resource: format!("ghcr.io/o/f/{id}"),
                tag: Some(tag.into()),
                digest: digest.into(),
            },
        );
        n.aliases = Some(vec![id.to_string()]);
        n
    }

    fn names(arena: &[Node], order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| arena[i].user_id.clone()).collect()
    }

    #[test]
    fn rounds_are_sorted_by_resource() {
        let mut arena = vec![
            oci("ghcr.io/o/f/c:1", "c", "1", "sha256:c"),
            oci("ghcr.io/o/f/a:1", "a", "1", "sha256:a"),
            oci("ghcr.io/o/f/b:1", "b", "1", "sha256:b"),
        ];
        let order = install_order(&mut arena, &[0, 1, 2]).unwrap();
        assert_eq!(
            names(&arena, &order),
            ["ghcr.io/o/f/a:1", "ghcr.io/o/f/b:1", "ghcr.io/o/f/c:1"]
        );
    }

    #[test]
    fn hard_and_soft_dependencies_come_first() {
        // a dependsOn z; b installsAfter a; c installsAfter x (not installed: ignored).
        let mut arena = vec![
            oci("a", "a", "1", "sha256:a"),
            oci("b", "b", "1", "sha256:b"),
            oci("c", "c", "1", "sha256:c"),
            oci("z", "z", "1", "sha256:z"),
        ];
        arena[0].depends_on = vec![3];
        let mut soft_a = oci("ghcr.io/o/f/a", "a", "latest", "");
        soft_a.aliases = None;
        arena[1].installs_after = vec![soft_a];
        let mut soft_x = oci("ghcr.io/o/f/x", "x", "latest", "");
        soft_x.aliases = None;
        arena[2].installs_after = vec![soft_x];
        let order = install_order(&mut arena, &[0, 1, 2, 3]).unwrap();
        assert_eq!(names(&arena, &order), ["c", "z", "a", "b"]);
    }

    #[test]
    fn override_priority_pulls_features_forward_but_not_past_dependencies() {
        let mut arena = vec![
            oci("a", "a", "1", "sha256:a"),
            oci("b", "b", "1", "sha256:b"),
            oci("c", "c", "1", "sha256:c"),
            oci("d", "d", "1", "sha256:d"),
        ];
        // d dependsOn a: overriding d first still installs a before it.
        arena[3].depends_on = vec![0];
        let over = |id: &str| {
            let mut n = oci(id, id, "latest", "");
            n.aliases = None;
            n
        };
        apply_override(&mut arena, &[0, 1, 2, 3], &[over("d"), over("c")]);
        assert_eq!(arena[3].round_priority, 2);
        assert_eq!(arena[2].round_priority, 1);
        let order = install_order(&mut arena, &[0, 1, 2, 3]).unwrap();
        // Round 1: a, b, c ready; c has the max priority (1) -> c alone.
        // Round 2: a, b ready (priority 0) -> a, b. Round 3: d.
        assert_eq!(names(&arena, &order), ["c", "a", "b", "d"]);
    }

    #[test]
    fn cycles_are_named() {
        let mut arena = vec![
            oci("a", "a", "1", "sha256:a"),
            oci("b", "b", "1", "sha256:b"),
            oci("c", "c", "1", "sha256:c"),
        ];
        arena[0].depends_on = vec![1];
        arena[1].depends_on = vec![0];
        let e = install_order(&mut arena, &[0, 1, 2]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("a -> b -> a") || msg.contains("b -> a -> b"),
            "{msg}"
        );
        assert!(e.hint().is_some());
    }

    #[test]
    fn options_compare_like_the_reference() {
        assert!(options_cmp(&json!({"a": "1"}), &json!({"a": "1", "b": "2"})) < 0);
        assert!(options_cmp(&json!({"a": "x"}), &json!({"b": "x"})) < 0);
        assert!(options_cmp(&json!({"a": "b"}), &json!({"a": "a"})) > 0);
        assert!(options_cmp(&json!({"a": false}), &json!({"a": true})) < 0);
        assert_eq!(options_cmp(&json!({"a": "x"}), &json!({"a": "x"})), 0);
        assert!(options_cmp(&json!(true), &json!("x")) < 0);
        assert!(options_cmp(&json!("1.0"), &json!("2")) < 0);
    }

    #[test]
    fn locale_compare_approximates_icu() {
        assert_eq!(locale_cmp("a", "B"), Ordering::Less);
        assert_eq!(locale_cmp("a", "A"), Ordering::Less);
        assert_eq!(locale_cmp("a-b", "a_b"), Ordering::Greater);
        assert_eq!(locale_cmp("a/b", "a1"), Ordering::Less);
        assert_eq!(locale_cmp("1", "a"), Ordering::Less);
        assert_eq!(locale_cmp("go", "go"), Ordering::Equal);
    }
}

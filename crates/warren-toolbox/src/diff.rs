//! Unified diffs of small text files (Myers' O(ND) algorithm on lines, three lines of context),
//! for the session audit of toolbox writes. Past [`MAX_EDITS`] edits a summary replaces the diff.

/// Edit distance beyond which no line-by-line diff is made.
const MAX_EDITS: usize = 4000;

const CONTEXT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Keep,
    Del,
    Add,
}

/// The edit script turning `a` into `b` (each step: op, index in a, index in b), or `None` when
/// more than `MAX_EDITS` edits are needed.
fn script(a: &[&str], b: &[&str]) -> Option<Vec<(Op, usize, usize)>> {
    let n = a.len() as isize;
    let m = b.len() as isize;
    let max = (n + m) as usize;
    let limit = max.min(MAX_EDITS);
    let off = limit as isize + 1;
    let mut v = vec![0isize; 2 * (limit + 2) + 1];
    // trace[d]: v's values for diagonals -d..=d before step d+1.
    let mut trace: Vec<Vec<isize>> = vec![];
    let mut found = None;
    'outer: for d in 0..=limit as isize {
        let mut snap = Vec::with_capacity(2 * d as usize + 1);
        let mut k = -d;
        while k <= d {
            let mut x =
                if k == -d || (k != d && v[(off + k - 1) as usize] < v[(off + k + 1) as usize]) {
                    v[(off + k + 1) as usize]
                } else {
                    v[(off + k - 1) as usize] + 1
                };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[(off + k) as usize] = x;
            snap.push(x);
            if x >= n && y >= m {
                trace.push(snap);
                found = Some(d);
                break 'outer;
            }
            k += 2;
        }
        trace.push(snap);
    }
    let dmax = found?;
    // Walk back.
    let mut ops = vec![];
    let (mut x, mut y) = (n, m);
    let at = |d: isize, k: isize, trace: &Vec<Vec<isize>>| -> isize {
        // trace[d] holds diagonals -d, -d+2, ..., d.
        trace[d as usize][((k + d) / 2) as usize]
    };
    for d in (1..=dmax).rev() {
        let k = x - y;
        let prev_k = if k == -d || (k != d && at(d - 1, k - 1, &trace) < at(d - 1, k + 1, &trace)) {
            k + 1
        } else {
            k - 1
        };
        let px = at(d - 1, prev_k, &trace);
        let py = px - prev_k;
        while x > px && y > py {
            ops.push((Op::Keep, (x - 1) as usize, (y - 1) as usize));
            x -= 1;
            y -= 1;
        }
        if prev_k == k + 1 {
            ops.push((Op::Add, x as usize, (y - 1) as usize));
            y -= 1;
        } else {
            ops.push((Op::Del, (x - 1) as usize, y as usize));
            x -= 1;
        }
    }
    while x > 0 && y > 0 {
        ops.push((Op::Keep, (x - 1) as usize, (y - 1) as usize));
        x -= 1;
        y -= 1;
    }
    ops.reverse();
    Some(ops)
}

fn lines(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return vec![];
    }
    s.split_inclusive('\n').collect()
}

/// A path as it may appear on a diff header line: backslashes and line breaks escaped, so a
/// file named `a\n+++ b/other` cannot forge header or hunk lines.
pub fn header_name(p: &str) -> String {
    p.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// The unified diff of `old` → `new` with headers `from` and `to`; empty when equal.
pub fn unified(old: &str, new: &str, from: &str, to: &str) -> String {
    if old == new {
        return String::new();
    }
    let (from, to) = (header_name(from), header_name(to));
    let a = lines(old);
    let b = lines(new);
    let Some(ops) = script(&a, &b) else {
        return format!(
            "--- {from}\n+++ {to}\n@@ too many changes for a line diff: {} lines → {} lines @@\n",
            a.len(),
            b.len()
        );
    };
    let mut out = format!("--- {from}\n+++ {to}\n");
    // Hunks: runs of changes with CONTEXT lines around, merged when close.
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.0 != Op::Keep)
        .map(|(i, _)| i)
        .collect();
    let mut i = 0;
    while i < changed.len() {
        let start = changed[i].saturating_sub(CONTEXT);
        let mut end = changed[i];
        let mut j = i;
        while j + 1 < changed.len() && changed[j + 1] <= end + 2 * CONTEXT + 1 {
            j += 1;
            end = changed[j];
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let hunk = &ops[start..end];
        let a_start = hunk
            .iter()
            .find(|o| o.0 != Op::Add)
            .map(|o| o.1)
            .unwrap_or(hunk[0].1);
        let b_start = hunk
            .iter()
            .find(|o| o.0 != Op::Del)
            .map(|o| o.2)
            .unwrap_or(hunk[0].2);
        let a_len = hunk.iter().filter(|o| o.0 != Op::Add).count();
        let b_len = hunk.iter().filter(|o| o.0 != Op::Del).count();
        let num = |s: usize, l: usize| if l == 0 { s } else { s + 1 };
        out.push_str(&format!(
            "@@ -{},{} +{},{} @@\n",
            num(a_start, a_len),
            a_len,
            num(b_start, b_len),
            b_len
        ));
        for (op, ai, bi) in hunk {
            let (mark, line) = match op {
                Op::Keep => (' ', a[*ai]),
                Op::Del => ('-', a[*ai]),
                Op::Add => ('+', b[*bi]),
            };
            out.push(mark);
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a diff's hunks to `old` (a check that the script is right).
    fn apply(old: &str, ops: &[(Op, usize, usize)], new: &str) -> String {
        let a = lines(old);
        let b = lines(new);
        let mut out = String::new();
        let mut ai = 0;
        for (op, x, y) in ops {
            match op {
                Op::Keep => {
                    assert_eq!(*x, ai);
                    out.push_str(a[*x]);
                    ai += 1;
                }
                Op::Del => {
                    assert_eq!(*x, ai);
                    ai += 1;
                }
                Op::Add => out.push_str(b[*y]),
            }
        }
        assert_eq!(ai, a.len());
        out
    }

    #[test]
    fn scripts_rebuild_the_new_text() {
        let cases = [
            ("", "a\nb\n"),
            ("a\nb\n", ""),
            ("a\nb\nc\n", "a\nc\n"),
            ("a\nb\nc\n", "a\nx\nb\nc\ny\n"),
            (
                "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n",
                "1\n2\nX\n4\n5\n6\n7\n8\nY\n10\n11\n",
            ),
            ("x", "y"),
            ("same\n", "same\n"),
        ];
        for (o, n) in cases {
            let ops = script(&lines(o), &lines(n)).unwrap();
            assert_eq!(apply(o, &ops, n), n, "{o:?} -> {n:?}");
        }
        // Pseudo-random texts.
        let mut seed = 7u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) % 5
        };
        for _ in 0..200 {
            let o: String = (0..20).map(|_| format!("{}\n", rnd())).collect();
            let n: String = (0..20).map(|_| format!("{}\n", rnd())).collect();
            let ops = script(&lines(&o), &lines(&n)).unwrap();
            assert_eq!(apply(&o, &ops, &n), n);
        }
    }

    #[test]
    fn unified_format() {
        let d = unified("a\nb\nc\n", "a\nB\nc\n", "a/f", "b/f");
        assert_eq!(d, "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
        let d = unified("", "new\n", "/dev/null", "b/f");
        assert_eq!(d, "--- /dev/null\n+++ b/f\n@@ -0,0 +1,1 @@\n+new\n");
        // A newline in a path cannot forge a header or hunk line.
        let d = unified("a\n", "b\n", "a/x\n+++ b/evil\n@@ -1 +1 @@", "b/x\r");
        let head: Vec<&str> = d.lines().take(3).collect();
        assert_eq!(
            head,
            [
                "--- a/x\\n+++ b/evil\\n@@ -1 +1 @@",
                "+++ b/x\\r",
                "@@ -1,1 +1,1 @@"
            ]
        );
        let d = unified("x", "y", "a/f", "b/f");
        assert!(d.contains("-x\n\\ No newline at end of file\n+y\n"), "{d}");
        assert_eq!(unified("s\n", "s\n", "a", "b"), "");
        let old: String = (0..40).map(|i| format!("{i}\n")).collect();
        let new: String = (0..40)
            .map(|i| match i {
                5 => "five\n".to_string(),
                30 => "thirty\n".to_string(),
                _ => format!("{i}\n"),
            })
            .collect();
        let d = unified(&old, &new, "a", "b");
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
    }
}

//! OpenSSH public keys as users register them: one `type base64 [comment]` line, as in a `.pub`
//! file or an `authorized_keys` line without options.
//!
//! The base64 part is the key's wire format (RFC 4253 §6.6, RFC 5656 §3.1, RFC 8709 §4): a
//! sequence of length-prefixed strings whose first is the key type again. Parsing decodes it,
//! checks that the embedded type matches the prefix and that the fields are well formed with
//! nothing after them, and computes the fingerprint exactly as `ssh-keygen -l` prints it
//! (`SHA256:` and the unpadded base64 of the SHA-256 of the wire format).
//!
//! Accepted: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `-nistp384`, `-nistp521`, and `ssh-rsa` of
//! 2048 to 16384 bits. Refused, each with a reason: DSA (`ssh-dss`, removed from OpenSSH), shorter
//! RSA keys, certificates, security-key (`sk-`) keys, private keys pasted by mistake, and the
//! RFC 4716 (`---- BEGIN SSH2 PUBLIC KEY ----`) form.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: u32 = 2048;
/// The largest RSA modulus accepted, in bits (OpenSSH's own limit).
pub const MAX_RSA_BITS: u32 = 16384;
/// The longest key line accepted, in bytes (a 16384-bit RSA key is under 3 KiB).
pub const MAX_LINE_LEN: usize = 16 * 1024;
/// The longest comment kept (as the default name), in characters.
pub const MAX_COMMENT_LEN: usize = 100;

/// The kinds of key accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `ssh-ed25519`.
    Ed25519,
    /// `ecdsa-sha2-nistp256`.
    EcdsaP256,
    /// `ecdsa-sha2-nistp384`.
    EcdsaP384,
    /// `ecdsa-sha2-nistp521`.
    EcdsaP521,
    /// `ssh-rsa` (any of its signature algorithms).
    Rsa,
}

impl KeyType {
    /// Every accepted type.
    pub const ALL: [KeyType; 5] = [
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::EcdsaP521,
        KeyType::Rsa,
    ];

    /// The OpenSSH name, as it starts the key line.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ssh-ed25519",
            KeyType::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyType::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeyType::EcdsaP521 => "ecdsa-sha2-nistp521",
            KeyType::Rsa => "ssh-rsa",
        }
    }

    /// The type named `s`, if it is one Warren accepts.
    pub fn from_name(s: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The curve identifier an ECDSA key embeds, and the size of a coordinate in bytes.
    fn curve(self) -> Option<(&'static str, usize)> {
        match self {
            KeyType::EcdsaP256 => Some(("nistp256", 32)),
            KeyType::EcdsaP384 => Some(("nistp384", 48)),
            KeyType::EcdsaP521 => Some(("nistp521", 66)),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, validated public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Its type.
    pub key_type: KeyType,
    /// The wire format (the decoded base64).
    pub blob: Vec<u8>,
    /// The comment after the key, if any (trimmed; not part of the key).
    pub comment: Option<String>,
    /// Modulus size for RSA keys; the curve's size for ECDSA; 256 for Ed25519.
    pub bits: u32,
}

impl PublicKey {
    /// `type base64`: the key without its comment, in canonical base64.
    pub fn openssh(&self) -> String {
        format!(
            "{} {}",
            self.key_type,
            base64::engine::general_purpose::STANDARD.encode(&self.blob)
        )
    }

    /// `SHA256:<base64 without padding>`, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.blob)
    }
}

/// The SHA-256 fingerprint of a key's wire format, in OpenSSH's notation.
pub fn fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob))
    )
}

/// Why a key line was refused: a one-line message and, where there is one, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl KeyError {
    fn new(message: impl Into<String>) -> Self {
        KeyError {
            message: message.into(),
            hint: None,
        }
    }
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KeyError {}

const HINT_PUB: &str =
    "paste the contents of the .pub file (e.g. ~/.ssh/id_ed25519.pub), or make a key with `ssh-keygen -t ed25519`";

/// Parses one OpenSSH public key line (`type base64 [comment]`).
pub fn parse(input: &str) -> Result<PublicKey, KeyError> {
    if input.len() > MAX_LINE_LEN {
        return Err(KeyError::new(format!(
            "the key is {} bytes long; a public key line is at most {MAX_LINE_LEN}",
            input.len()
        ))
        .hint(HINT_PUB));
    }
    let text = input.trim();
    if text.is_empty() {
        return Err(KeyError::new("the public key is empty").hint(HINT_PUB));
    }
    if text.contains("PRIVATE KEY") {
        return Err(KeyError::new(
            "this is a private key, which must never leave your machine",
        )
        .hint("paste the public half instead: the .pub file next to it, or `ssh-keygen -y -f KEYFILE`"));
    }
    if text.starts_with("---- BEGIN SSH2 PUBLIC KEY") {
        return Err(KeyError::new(
            "this is an RFC 4716 (SSH2) public key, not OpenSSH's one-line form",
        )
        .hint("convert it with `ssh-keygen -i -f FILE`"));
    }
    if text.lines().filter(|l| !l.trim().is_empty()).count() > 1 {
        return Err(KeyError::new("more than one line: add one key at a time")
            .hint("each line of an authorized_keys file is one key"));
    }
    let mut words = text.split_ascii_whitespace();
    let type_name = words.next().unwrap_or_default();
    let Some(b64) = words.next() else {
        return Err(KeyError::new(format!(
            "`{}` is not a public key line: expected `TYPE BASE64 [COMMENT]`",
            shorten(type_name)
        ))
        .hint(HINT_PUB));
    };
    let comment = {
        let rest: Vec<&str> = words.collect();
        let c = rest.join(" ");
        if c.is_empty() {
            None
        } else {
            Some(
                c.chars()
                    .filter(|ch| !ch.is_control())
                    .take(MAX_COMMENT_LEN)
                    .collect(),
            )
        }
    };
    let key_type = key_type_of(type_name)?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| {
            KeyError::new(format!("the key's base64 is invalid ({e})"))
                .hint("the key was probably cut or wrapped when copied; copy the whole line again")
        })?;
    let bits = check_blob(key_type, &blob)?;
    Ok(PublicKey {
        key_type,
        blob,
        comment,
        bits,
    })
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

fn key_type_of(name: &str) -> Result<KeyType, KeyError> {
    if let Some(t) = KeyType::from_name(name) {
        return Ok(t);
    }
    let accepted = "ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa (2048 bits or more)";
    let err = if name == "ssh-dss" {
        KeyError::new(
            "DSA keys (`ssh-dss`) are not accepted: they are weak and OpenSSH removed them",
        )
    } else if name.contains("-cert-v01@openssh.com") {
        KeyError::new(format!(
            "`{}` is a certificate; register the plain public key",
            shorten(name)
        ))
    } else if name.starts_with("sk-") {
        KeyError::new(format!(
            "security-key keys (`{}`) are not supported yet",
            shorten(name)
        ))
    } else if name.contains('=') || name.contains('"') || name.contains(',') {
        KeyError::new("the line starts with authorized_keys options; register the key alone")
    } else {
        KeyError::new(format!("unknown key type `{}`", shorten(name)))
    };
    Err(err.hint(format!(
        "accepted: {accepted}; `ssh-keygen -t ed25519` makes one"
    )))
}

/// A reader of the wire format's length-prefixed fields.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn string(&mut self, what: &str) -> Result<&'a [u8], KeyError> {
        let truncated = || {
            KeyError::new(format!("the key is truncated (in its {what})"))
                .hint("the key was probably cut when copied; copy the whole line again")
        };
        if self.rest.len() < 4 {
            return Err(truncated());
        }
        let (len, rest) = self.rest.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if rest.len() < len {
            return Err(truncated());
        }
        let (s, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(s)
    }
}

/// Checks the wire format of a key of type `t`; returns its size in bits.
fn check_blob(t: KeyType, blob: &[u8]) -> Result<u32, KeyError> {
    let mut r = Reader { rest: blob };
    let embedded = r.string("type")?;
    if embedded != t.as_str().as_bytes() {
        return Err(KeyError::new(format!(
            "the key says `{t}` but its data is a `{}` key",
            shorten(&String::from_utf8_lossy(embedded))
        ))
        .hint("the type and the base64 do not belong together; copy the whole line again"));
    }
    let bits = match t {
        KeyType::Ed25519 => {
            let k = r.string("public key")?;
            if k.len() != 32 {
                return Err(KeyError::new(format!(
                    "an ed25519 public key is 32 bytes, this one is {}",
                    k.len()
                )));
            }
            256
        }
        KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521 => {
            let (curve, size) = t.curve().unwrap_or(("", 0));
            let c = r.string("curve name")?;
            if c != curve.as_bytes() {
                return Err(KeyError::new(format!(
                    "the key says `{t}` but names the curve `{}`",
                    shorten(&String::from_utf8_lossy(c))
                )));
            }
            let q = r.string("public point")?;
            if q.len() != 1 + 2 * size || q[0] != 4 {
                return Err(KeyError::new(format!(
                    "the {curve} public point is malformed (expected {} bytes starting with 04)",
                    1 + 2 * size
                )));
            }
            match t {
                KeyType::EcdsaP256 => 256,
                KeyType::EcdsaP384 => 384,
                _ => 521,
            }
        }
        KeyType::Rsa => {
            let e = r.string("exponent")?;
            let n = r.string("modulus")?;
            let e = strip_zeros(e);
            if e.is_empty() || e[e.len() - 1] & 1 == 0 {
                return Err(KeyError::new("the RSA public exponent is invalid"));
            }
            let bits = mpint_bits(n);
            if bits < MIN_RSA_BITS {
                return Err(KeyError::new(format!(
                    "this RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
                ))
                .hint("make a new key with `ssh-keygen -t ed25519` (or `-t rsa -b 4096`)"));
            }
            if bits > MAX_RSA_BITS {
                return Err(KeyError::new(format!(
                    "this RSA key has {bits} bits; at most {MAX_RSA_BITS} are accepted"
                )));
            }
            bits
        }
    };
    if !r.rest.is_empty() {
        return Err(KeyError::new(format!(
            "the key has {} unexpected bytes after its fields",
            r.rest.len()
        ))
        .hint("copy the whole line of the .pub file again"));
    }
    Ok(bits)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// The number of significant bits of a (non-negative) mpint.
fn mpint_bits(n: &[u8]) -> u32 {
    let n = strip_zeros(n);
    match n.first() {
        None => 0,
        Some(&top) => (n.len() as u32 - 1) * 8 + (8 - top.leading_zeros()),
    }
}

/// The `ssh-keygen -Y sign -n` namespace of a key's proof of possession.
pub const PROOF_NAMESPACE: &str = "warren-ssh-key";

/// The message a user signs with a key to prove holding it (`ssh-keygen -Y sign -n
/// warren-ssh-key -f KEY FILE` over exactly these bytes): bound to the user and the key, so a
/// signature proves nothing for anyone else.
pub fn proof_message(user_id: &str, fingerprint: &str) -> String {
    format!("warren ssh-key proof\nuser: {user_id}\nkey: {fingerprint}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn field(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }

    /// `ssh-keygen` makes a key in `dir`; returns the .pub line and `ssh-keygen -lf`'s
    /// fingerprint and bits. None when OpenSSH is not installed.
    fn keygen(dir: &Path, args: &[&str], name: &str) -> Option<(String, String, u32)> {
        let path = dir.join(name);
        let st = Command::new("ssh-keygen")
            .args(args)
            .args(["-q", "-N", "", "-C", "me@laptop", "-f"])
            .arg(&path)
            .status()
            .ok()?;
        assert!(st.success(), "ssh-keygen {args:?}");
        let line = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        let out = Command::new("ssh-keygen")
            .args(["-E", "sha256", "-lf"])
            .arg(path.with_extension("pub"))
            .output()
            .unwrap();
        assert!(out.status.success());
        // `256 SHA256:xxxx me@laptop (ED25519)`
        let text = String::from_utf8(out.stdout).unwrap();
        let mut w = text.split_whitespace();
        let bits = w.next().unwrap().parse().unwrap();
        let fp = w.next().unwrap().to_string();
        Some((line, fp, bits))
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "warren-sshkey-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn real_keys_match_ssh_keygen() {
        let dir = tempdir();
        let cases: [(&[&str], KeyType); 6] = [
            (&["-t", "ed25519"], KeyType::Ed25519),
            (&["-t", "ecdsa", "-b", "256"], KeyType::EcdsaP256),
            (&["-t", "ecdsa", "-b", "384"], KeyType::EcdsaP384),
            (&["-t", "ecdsa", "-b", "521"], KeyType::EcdsaP521),
            (&["-t", "rsa", "-b", "2048"], KeyType::Rsa),
            (&["-t", "rsa", "-b", "3072"], KeyType::Rsa),
        ];
        for (i, (args, t)) in cases.into_iter().enumerate() {
            let Some((line, fp, bits)) = keygen(&dir, args, &format!("k{i}")) else {
                panic!("ssh-keygen is not installed (apt-get install openssh-client)");
            };
            let k = parse(&line).unwrap_or_else(|e| panic!("{args:?}: {e}: {line}"));
            assert_eq!(k.key_type, t, "{args:?}");
            assert_eq!(k.fingerprint(), fp, "{args:?}");
            assert_eq!(k.bits, bits, "{args:?}");
            assert_eq!(k.comment.as_deref(), Some("me@laptop"));
            // The canonical text is the line without its comment.
            assert_eq!(format!("{} me@laptop\n", k.openssh()), line, "{args:?}");
            // Without a comment, with surrounding whitespace: the same key.
            let bare = parse(&format!("  {}\r\n", k.openssh())).unwrap();
            assert_eq!(bare.fingerprint(), fp);
            assert_eq!(bare.comment, None);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn weak_and_unsupported_keys_are_refused_with_a_reason() {
        let dir = tempdir();
        let (short, _, bits) = keygen(&dir, &["-t", "rsa", "-b", "1024"], "short").unwrap();
        assert_eq!(bits, 1024);
        let e = parse(&short).unwrap_err();
        assert!(e.message.contains("1024 bits"), "{e}");
        assert!(e.hint.unwrap().contains("ssh-keygen -t ed25519"));

        // A DSA key (OpenSSH 10 cannot make one any more: a well-formed blob by hand).
        let mut blob = Vec::new();
        field(&mut blob, b"ssh-dss");
        for _ in 0..4 {
            field(&mut blob, &[1; 20]);
        }
        let e = parse(&format!("ssh-dss {} old@box", b64(&blob))).unwrap_err();
        assert!(e.message.contains("DSA"), "{e}");

        // The private half, pasted by mistake.
        let priv_key = std::fs::read_to_string(dir.join("short")).unwrap();
        let e = parse(&priv_key).unwrap_err();
        assert!(e.message.contains("private key"), "{e}");
        assert!(e.hint.unwrap().contains(".pub"));

        // RFC 4716 form, from ssh-keygen -e.
        let out = Command::new("ssh-keygen")
            .args(["-e", "-f"])
            .arg(dir.join("short.pub"))
            .output()
            .unwrap();
        let e = parse(&String::from_utf8(out.stdout).unwrap()).unwrap_err();
        assert!(e.hint.unwrap().contains("ssh-keygen -i"), "{}", e.message);

        // Certificates and security keys.
        assert!(parse("ssh-ed25519-cert-v01@openssh.com AAAA x")
            .unwrap_err()
            .message
            .contains("certificate"));
        assert!(parse("sk-ssh-ed25519@openssh.com AAAA x")
            .unwrap_err()
            .message
            .contains("security-key"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        let dir = tempdir();
        let (ed, _, _) = keygen(&dir, &["-t", "ed25519"], "ed").unwrap();
        let (ec, _, _) = keygen(&dir, &["-t", "ecdsa"], "ec").unwrap();
        let ed_b64 = ed.split_whitespace().nth(1).unwrap().to_string();
        let ec_b64 = ec.split_whitespace().nth(1).unwrap().to_string();
        let msg = |s: &str| parse(s).unwrap_err().message;

        assert!(msg("").contains("empty"));
        assert!(msg("   \n").contains("empty"));
        assert!(msg("ssh-ed25519").contains("expected `TYPE BASE64"));
        assert!(msg("hello world").contains("unknown key type `hello`"));
        assert!(msg(&format!("{ed}{ed}")).contains("more than one line"));
        assert!(
            msg(&format!("command=\"ls\" {ed}")).contains("authorized_keys options"),
            "{}",
            msg(&format!("command=\"ls\" {ed}"))
        );
        // Bad base64: a character outside the alphabet, and a cut in the middle of a quantum.
        assert!(msg(&format!("ssh-ed25519 {}!", &ed_b64[..20])).contains("base64"));
        assert!(msg(&format!("ssh-ed25519 {}", &ed_b64[..ed_b64.len() - 3])).contains("base64"));
        // The type and the data disagree.
        let m = msg(&format!("ssh-rsa {ed_b64}"));
        assert!(
            m.contains("`ssh-rsa`") && m.contains("`ssh-ed25519`"),
            "{m}"
        );
        let m = msg(&format!("ecdsa-sha2-nistp384 {ec_b64}"));
        assert!(m.contains("ecdsa-sha2-nistp256"), "{m}");
        // Truncated and padded wire formats, re-encoded as valid base64.
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&ed_b64)
            .unwrap();
        let m = msg(&format!("ssh-ed25519 {}", b64(&blob[..blob.len() - 5])));
        assert!(m.contains("truncated"), "{m}");
        let m = msg(&format!("ssh-ed25519 {}", b64(&blob[..3])));
        assert!(m.contains("truncated"), "{m}");
        let mut long = blob.clone();
        long.push(0);
        assert!(msg(&format!("ssh-ed25519 {}", b64(&long))).contains("unexpected bytes"));
        // An ed25519 key of the wrong size.
        let mut bad = Vec::new();
        field(&mut bad, b"ssh-ed25519");
        field(&mut bad, &[7; 31]);
        assert!(msg(&format!("ssh-ed25519 {}", b64(&bad))).contains("32 bytes"));
        // A huge length prefix does not allocate or panic.
        let mut huge = Vec::new();
        field(&mut huge, b"ssh-ed25519");
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(msg(&format!("ssh-ed25519 {}", b64(&huge))).contains("truncated"));
        // Oversized input.
        assert!(msg(&"A".repeat(MAX_LINE_LEN + 1)).contains("at most"));
        // An RSA key with an even exponent.
        let mut rsa = Vec::new();
        field(&mut rsa, b"ssh-rsa");
        field(&mut rsa, &[2]);
        field(&mut rsa, &[0xff; 256]);
        assert!(msg(&format!("ssh-rsa {}", b64(&rsa))).contains("exponent"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rsa_bits_count_the_modulus_not_its_sign_byte() {
        assert_eq!(mpint_bits(&[]), 0);
        assert_eq!(mpint_bits(&[0, 0x80]), 8);
        assert_eq!(mpint_bits(&[0x01, 0, 0]), 17);
        let mut n = vec![0u8];
        n.extend(std::iter::repeat_n(0xffu8, 256));
        assert_eq!(mpint_bits(&n), 2048);
    }

    #[test]
    fn comments_are_trimmed_and_cleaned() {
        let mut blob = Vec::new();
        field(&mut blob, b"ssh-ed25519");
        field(&mut blob, &[9; 32]);
        let k = parse(&format!("ssh-ed25519 {}  work  laptop\t", b64(&blob))).unwrap();
        assert_eq!(k.comment.as_deref(), Some("work laptop"));
        assert_eq!(k.fingerprint(), fingerprint(&blob));
        assert!(k.fingerprint().starts_with("SHA256:") && !k.fingerprint().ends_with('='));
    }
}

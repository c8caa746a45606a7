//! libpq's TLS parameters that tokio-postgres does not parse.
//!
//! Users copy database URLs from libpq tools and cloud consoles, which write
//! `sslmode=verify-full` (or `verify-ca`) and `sslrootcert=FILE`; tokio-postgres
//! only knows `disable`, `prefer` and `require` and rejects other keys. Our
//! `require` already checks the certificate chain *and* the host name, so the
//! verify modes map onto it, and `sslrootcert` becomes the CA file when
//! `--database-ca` is not given. Both URL (`postgres://…?sslmode=…`) and
//! key/value (`host=… sslmode=…`) forms are handled.

use std::path::PathBuf;

use crate::error::StoreError;

/// A database URL tokio-postgres accepts, plus the CA file it named.
#[derive(Debug, PartialEq, Eq)]
pub struct TlsParams {
    pub url: String,
    pub root_cert: Option<PathBuf>,
}

/// Rewrites libpq-only TLS parameters; everything else is left as written.
pub fn libpq_tls(url: &str) -> Result<TlsParams, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        from_url(url)
    } else {
        from_key_values(url)
    }
}

/// The sslmode tokio-postgres understands for a libpq one.
fn sslmode(value: &str) -> Result<&'static str, StoreError> {
    match value {
        "disable" => Ok("disable"),
        // libpq's allow tries plaintext first, then TLS; prefer is the
        // nearest mode that never refuses either.
        "allow" | "prefer" => Ok("prefer"),
        "require" | "verify-ca" | "verify-full" => Ok("require"),
        other => Err(StoreError::InvalidArgument(format!(
            "bad database URL: sslmode {other:?} is not one of disable, allow, prefer, require, \
             verify-ca, verify-full"
        ))),
    }
}

fn from_url(url: &str) -> Result<TlsParams, StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(TlsParams {
            url: url.to_owned(),
            root_cert: None,
        });
    };
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => kept.push(format!("sslmode={}", sslmode(&percent_decode(value)?)?)),
            "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value)?)),
            _ => kept.push(pair.to_owned()),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(TlsParams { url, root_cert })
}

fn percent_decode(value: &str) -> Result<String, StoreError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| {
                    StoreError::InvalidArgument(
                        "bad database URL: a % not followed by two hex digits".into(),
                    )
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        StoreError::InvalidArgument("bad database URL: a parameter is not UTF-8".into())
    })
}

/// One `key=value` of a libpq connection string: its text as written and
/// its key and unquoted value.
struct Pair<'a> {
    raw: &'a str,
    key: &'a str,
    value: String,
}

fn from_key_values(conninfo: &str) -> Result<TlsParams, StoreError> {
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in key_values(conninfo)? {
        match pair.key {
            "sslmode" => kept.push(format!("sslmode={}", sslmode(&pair.value)?)),
            "sslrootcert" => root_cert = Some(PathBuf::from(pair.value)),
            _ => kept.push(pair.raw.to_owned()),
        }
    }
    Ok(TlsParams {
        url: kept.join(" "),
        root_cert,
    })
}

/// Splits a libpq key/value string (`key = value`, values optionally in
/// single quotes with backslash escapes).
fn key_values(conninfo: &str) -> Result<Vec<Pair<'_>>, StoreError> {
    let bad = |what: &str| StoreError::InvalidArgument(format!("bad database URL: {what}"));
    let bytes = conninfo.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_space(i);
        if i == bytes.len() {
            return Ok(pairs);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &conninfo[start..i];
        i = skip_space(i);
        if bytes.get(i) != Some(&b'=') {
            return Err(bad(&format!("{key:?} has no value")));
        }
        i = skip_space(i + 1);
        let mut value = String::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(bad("an unterminated quoted value")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        let ch = conninfo[i + 1..].chars().next().unwrap_or_default();
                        value.push(ch);
                        i += 1 + ch.len_utf8();
                    }
                    Some(_) => {
                        let ch = conninfo[i..].chars().next().unwrap_or_default();
                        value.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
        } else {
            let value_start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            value.push_str(&conninfo[value_start..i]);
        }
        pairs.push(Pair {
            raw: &conninfo[start..i],
            key,
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(url: &str) -> (String, Option<String>) {
        let params = libpq_tls(url).unwrap();
        (
            params.url,
            params.root_cert.map(|path| path.display().to_string()),
        )
    }

    #[test]
    fn verify_modes_in_urls_become_require_and_the_root_cert_the_ca() {
        assert_eq!(
            rewrite("postgres://u@db.example:5432/x?sslmode=verify-full&sslrootcert=%2Fca%20dir%2Froot.pem&application_name=a"),
            (
                "postgres://u@db.example:5432/x?sslmode=require&application_name=a".into(),
                Some("/ca dir/root.pem".into())
            )
        );
        assert_eq!(
            rewrite("postgresql://db/x?sslmode=verify-ca"),
            ("postgresql://db/x?sslmode=require".into(), None)
        );
        assert_eq!(
            rewrite("postgres://db/x?sslmode=allow"),
            ("postgres://db/x?sslmode=prefer".into(), None)
        );
        assert_eq!(
            rewrite("postgres://db/x?sslrootcert=ca.pem"),
            ("postgres://db/x".into(), Some("ca.pem".into()))
        );
        // Untouched when there is nothing to rewrite, passwords included.
        let plain = "postgres://u:p%40ss@db/x?options=-c%20a%3Db";
        assert_eq!(rewrite(plain), (plain.into(), None));
        assert_eq!(rewrite("postgres://db/x"), ("postgres://db/x".into(), None));
    }

    #[test]
    fn key_value_strings_are_rewritten_the_same_way() {
        assert_eq!(
            rewrite("host=db port=5432  sslmode = verify-full password='a b\\'c' sslrootcert='/etc/ca root.pem'"),
            (
                "host=db port=5432 sslmode=require password='a b\\'c'".into(),
                Some("/etc/ca root.pem".into())
            )
        );
        assert_eq!(
            rewrite("host=db sslmode=disable"),
            ("host=db sslmode=disable".into(), None)
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        for url in [
            "postgres://db/x?sslmode=sometimes",
            "host=db sslmode=sometimes",
            "host=db password='open",
            "host=db lonely",
            "postgres://db/x?sslrootcert=%zz",
        ] {
            let err = libpq_tls(url).unwrap_err().to_string();
            assert!(err.contains("bad database URL"), "{url}: {err}");
        }
        let err = libpq_tls("host=db sslmode=sometimes")
            .unwrap_err()
            .to_string();
        assert!(err.contains("verify-full"), "{err}");
    }

    #[test]
    fn the_rewritten_urls_parse() {
        use std::str::FromStr;
        for url in [
            "postgres://u@db/x?sslmode=verify-full&sslrootcert=ca.pem",
            "host=db user=u sslmode=verify-ca sslrootcert=ca.pem",
        ] {
            let params = libpq_tls(url).unwrap();
            let config = tokio_postgres::Config::from_str(&params.url).unwrap();
            assert_eq!(
                config.get_ssl_mode(),
                tokio_postgres::config::SslMode::Require
            );
        }
    }
}

//! Tracing set-up shared by every binary.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), and
/// `json` switches to one JSON object per line for log shippers. Calling it
/// twice is harmless, so tests and `serve all` can both use it.
pub fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
}

/// Query or key=value parameters whose values are secrets.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "sslpassword",
    "passfile",
    "api_key",
    "apikey",
    "key",
    "token",
    "access_token",
    "secret",
];

fn is_secret(name: &str) -> bool {
    SECRET_PARAMS.contains(&name.trim().to_ascii_lowercase().as_str())
}

/// A connection string fit for logs: the password of a URL's userinfo,
/// secret query parameters (`?password=…`, `token=…`) and libpq
/// `password=…` pairs (quoted or not) become `***`.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (base, query) = match rest.split_once('?') {
                Some((base, query)) => (base, Some(query)),
                None => (rest, None),
            };
            let base = match base.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => base.to_owned(),
                },
                None => base.to_owned(),
            };
            let query = query.map(|query| {
                query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((name, _)) if is_secret(name) => format!("{name}=***"),
                        _ => pair.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("&")
            });
            match query {
                Some(query) => format!("{scheme}://{base}?{query}"),
                None => format!("{scheme}://{base}"),
            }
        }
        None => redact_key_values(url),
    }
}

/// libpq's `key=value key='quoted value'` form.
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            break;
        };
        let name_start = rest[..eq].rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let secret = is_secret(&rest[name_start..eq]);
        out.push_str(&rest[..=eq]);
        let value = &rest[eq + 1..];
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            // Up to the closing quote, skipping escaped ones.
            let mut chars = quoted.char_indices();
            let mut close = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' => {
                        close = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            1 + close
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        if secret {
            out.push_str("***");
        } else {
            out.push_str(&value[..end]);
        }
        rest = &value[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://lex:s3cret@localhost:5432/db"),
            "postgres://lex:***@localhost:5432/db"
        );
        assert_eq!(
            redact_url("postgres://lex@localhost/db"),
            "postgres://lex@localhost/db"
        );
        assert_eq!(redact_url("host=/tmp user=x"), "host=/tmp user=x");
    }

    #[test]
    fn redacts_every_form_of_secret() {
        assert_eq!(
            redact_url("postgres://h/db?sslmode=require&password=hunter2&user=x"),
            "postgres://h/db?sslmode=require&password=***&user=x"
        );
        assert_eq!(
            redact_url("https://api.example.com/v1?token=abc"),
            "https://api.example.com/v1?token=***"
        );
        assert_eq!(
            redact_url("host=db user=lex password=hunter2 dbname=x"),
            "host=db user=lex password=*** dbname=x"
        );
        let quoted = redact_url(r"host=db password='a b\'c' dbname=x");
        assert_eq!(quoted, "host=db password=*** dbname=x");
        assert!(!redact_url("user=a:b@c password=s3 x=1").contains("s3"));
    }
}

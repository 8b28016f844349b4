//! Where the bytes live: a directory of the local filesystem, or a bucket of an S3-compatible
//! store, named by a configuration string.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::ObjectsError;

/// The store a [`crate::Objects`] opens. Parsed from a string ([`StoreConfig::parse`]) or made
/// directly; its `Debug` and `Display` never show the secret key.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Files under a directory of the local filesystem (made when missing).
    Local {
        /// The directory.
        root: PathBuf,
    },
    /// A bucket of an S3-compatible store.
    S3(S3Config),
}

/// An S3-compatible bucket and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket (3 to 63 lowercase letters, digits, `.` or `-`).
    pub bucket: String,
    /// The endpoint (`http://host:port` or `https://…`); `None` is AWS's own for the region.
    pub endpoint: Option<String>,
    /// The region to sign for (`us-east-1` unless given).
    pub region: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
    /// Whether plain `http://` is allowed (the default when the endpoint is `http://`).
    pub allow_http: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<hidden>"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { root } => f.debug_struct("Local").field("root", root).finish(),
            Self::S3(s3) => s3.fmt(f),
        }
    }
}

/// The configuration string again, without credentials (they never are in it).
impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { root } => write!(f, "file://{}", root.display()),
            Self::S3(s3) => {
                write!(f, "s3://{}?region={}", s3.bucket, s3.region)?;
                if let Some(e) = &s3.endpoint {
                    write!(f, "&endpoint={e}")?;
                }
                write!(f, "&allow_http={}", s3.allow_http)
            }
        }
    }
}

impl StoreConfig {
    /// Files under `root`.
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Self::Local { root: root.into() }
    }

    /// The default: files under `<data_dir>/objects`, nothing to set up.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::local(data_dir.join("objects"))
    }

    /// Parses a configuration string, taking S3 credentials from the process environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`). See
    /// [`StoreConfig::parse_with_env`] for the forms.
    pub fn parse(s: &str) -> Result<Self, ObjectsError> {
        Self::parse_with_env(s, |name| std::env::var(name).ok())
    }

    /// Parses a configuration string, reading credentials through `env`:
    /// - `file:///absolute/path`: files under that directory;
    /// - `s3://BUCKET[?endpoint=URL][&region=R][&allow_http=true|false]`: a bucket of an
    ///   S3-compatible store, credentials from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
    ///   (both required: a missing key is an error, never a fall-back to other credential
    ///   sources) and `AWS_SESSION_TOKEN` when set. Values are taken as written (no percent
    ///   decoding). `allow_http` defaults to whether the endpoint is `http://`.
    ///
    /// Anything else (another scheme, a relative path, an unknown or repeated parameter, a
    /// malformed bucket or endpoint) is [`ObjectsError::Config`].
    pub fn parse_with_env(
        s: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ObjectsError> {
        let bad = |m: String| ObjectsError::Config(m);
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') || path.contains('\0') {
                return Err(bad(format!("{s:?}: a file store is file:///ABSOLUTE/PATH")));
            }
            return Ok(Self::local(path));
        }
        let Some(rest) = s.strip_prefix("s3://") else {
            return Err(bad(format!(
                "{s:?}: expected file:///PATH or s3://BUCKET?endpoint=URL&region=REGION"
            )));
        };
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        let (mut endpoint, mut region, mut allow_http) = (None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("parameter {pair:?} has no value")))?;
            let slot_taken = match key {
                "endpoint" => endpoint.replace(value.to_owned()).is_some(),
                "region" => region.replace(value.to_owned()).is_some(),
                "allow_http" => {
                    let v = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(format!("allow_http={value:?} is not true or false"))),
                    };
                    allow_http.replace(v).is_some()
                }
                _ => {
                    return Err(bad(format!(
                        "unknown parameter {key:?} (known: endpoint, region, allow_http; keys come \
                         from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                    )))
                }
            };
            if slot_taken {
                return Err(bad(format!("parameter {key:?} given twice")));
            }
        }
        let region = region.unwrap_or_else(|| "us-east-1".to_owned());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(format!("region {region:?} is not a region name")));
        }
        let plain = match &endpoint {
            None => false,
            Some(e) if e.starts_with("http://") => true,
            Some(e) if e.starts_with("https://") => false,
            Some(e) => return Err(bad(format!("endpoint {e:?} is not an http(s):// URL"))),
        };
        if let Some(e) = &endpoint {
            let host = e.split_once("://").map_or("", |(_, h)| h);
            if host.is_empty() || host.contains(['?', '#', ' ']) {
                return Err(bad(format!("endpoint {e:?} has no host")));
            }
        }
        let allow_http = allow_http.unwrap_or(plain);
        if plain && !allow_http {
            return Err(bad("allow_http=false with an http:// endpoint".to_owned()));
        }
        let key = |name: &str| {
            env(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| bad(format!("{name} is not set (S3 credentials come from it)")))
        };
        Ok(Self::S3(S3Config {
            bucket: bucket.to_owned(),
            endpoint,
            region,
            access_key_id: key("AWS_ACCESS_KEY_ID")?,
            secret_access_key: key("AWS_SECRET_ACCESS_KEY")?,
            session_token: env("AWS_SESSION_TOKEN").filter(|v| !v.is_empty()),
            allow_http,
        }))
    }
}

/// S3's bucket naming rules, the parts that matter for a URL path: 3 to 63 characters of
/// lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), ObjectsError> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| alnum(b) || b == b'.' || b == b'-')
        && bucket.bytes().next().is_some_and(alnum)
        && bucket.bytes().last().is_some_and(alnum);
    if ok {
        Ok(())
    } else {
        Err(ObjectsError::Config(format!(
            "bucket {bucket:?} is not 3 to 63 lowercase letters, digits, '.' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "AWS_ACCESS_KEY_ID" => Some("AKID".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("SECRET".into()),
            _ => None,
        }
    }

    #[test]
    fn parses_the_forms() {
        assert_eq!(
            StoreConfig::parse_with_env("file:///var/lib/suanli/objects", env).unwrap(),
            StoreConfig::local("/var/lib/suanli/objects")
        );
        let StoreConfig::S3(s3) = StoreConfig::parse_with_env(
            "s3://suanli-test?endpoint=http://127.0.0.1:5055&region=us-east-1",
            env,
        )
        .unwrap() else {
            panic!("not s3")
        };
        assert_eq!(s3.bucket, "suanli-test");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:5055"));
        assert!(s3.allow_http);
        assert_eq!(s3.access_key_id, "AKID");
        let StoreConfig::S3(aws) = StoreConfig::parse_with_env("s3://my.bucket", env).unwrap()
        else {
            panic!("not s3")
        };
        assert_eq!((aws.region.as_str(), aws.allow_http), ("us-east-1", false));
        assert_eq!(aws.endpoint, None);
    }

    #[test]
    fn secrets_are_never_shown() {
        let c = StoreConfig::parse_with_env("s3://bkt?endpoint=https://s3.example", env).unwrap();
        assert!(!format!("{c:?}").contains("SECRET"));
        assert!(!c.to_string().contains("SECRET"));
        assert_eq!(
            c.to_string(),
            "s3://bkt?region=us-east-1&endpoint=https://s3.example&allow_http=false"
        );
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for s in [
            "",
            "/abs/path",
            "file://relative",
            "gs://bucket",
            "s3://",
            "s3://Upper",
            "s3://ab",
            "s3://-bucket",
            "s3://bucket?endpoint",
            "s3://bucket?endpoint=ftp://x",
            "s3://bucket?endpoint=http://",
            "s3://bucket?region=us-east-1&region=eu-west-1",
            "s3://bucket?secret=x",
            "s3://bucket?allow_http=yes",
            "s3://bucket?region=",
            "s3://bucket?endpoint=http://h:1&allow_http=false",
        ] {
            assert!(
                matches!(
                    StoreConfig::parse_with_env(s, env),
                    Err(ObjectsError::Config(_))
                ),
                "{s:?}"
            );
        }
        assert!(matches!(
            StoreConfig::parse_with_env("s3://bucket", |_| None),
            Err(ObjectsError::Config(m)) if m.contains("AWS_ACCESS_KEY_ID")
        ));
    }
}

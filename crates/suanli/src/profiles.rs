//! CLI profiles: named servers and tokens in a TOML file, and how the CLI picks its server and token.
//!
//! The file lives at `$SUANLI_CONFIG`, else `$XDG_CONFIG_HOME/suanli/config.toml`, else
//! `$HOME/.config/suanli/config.toml`:
//!
//! ```toml
//! default_profile = "enterprise"
//! [profiles.enterprise]
//! server = "http://127.0.0.1:8080"
//! token = "sk_…"
//! org_id = "org_…"
//! org_name = "…"
//! ```
//!
//! Server and token are taken from, in order: the `--server`/`--token` flags, the `SUANLI_SERVER`/
//! `SUANLI_TOKEN` variables, the profile (`--profile`, else `SUANLI_PROFILE`, else
//! `default_profile`), and for the server [`DEFAULT_SERVER`]. The file holds secrets: it is written
//! with mode 0600, atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The server used when nothing names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One profile: where the exchange is and who to be on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The org the token acts for; informative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_name: Option<String>,
}

/// Reads an environment variable; unset and empty are the same.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where the config file is, by the process's environment.
pub fn config_path() -> PathBuf {
    config_path_with(env_var)
}

/// Where the config file is, by the environment that `env` reads.
pub fn config_path_with(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(path) = env("SUANLI_CONFIG") {
        return PathBuf::from(path);
    }
    let base = match env("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env("HOME").unwrap_or_else(|| ".".to_owned())).join(".config"),
    };
    base.join("suanli").join("config.toml")
}

/// Reads the config file; a missing file is an empty config.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
}

/// Adds or replaces `profiles` in the config file at `path`, keeping the others, and sets the
/// default profile when `default` is given. Creates the file (and its directory) if needed; writes
/// a temporary file with mode 0600 and renames it over the old one. Comments in the file are lost.
pub fn save_profiles(
    path: &Path,
    profiles: &[(String, Profile)],
    default: Option<&str>,
) -> anyhow::Result<()> {
    let mut config = load(path)?;
    for (name, profile) in profiles {
        if name.is_empty() {
            bail!("a profile needs a name");
        }
        config.profiles.insert(name.clone(), profile.clone());
    }
    if let Some(default) = default {
        config.default_profile = Some(default.to_owned());
    }
    let text = toml::to_string(&config).context("cannot write the config as TOML")?;
    write_private(path, text.as_bytes())
}

/// Writes `bytes` to `path` atomically, readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;

    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    // A file left by a crashed run may have other permissions: start from a new one.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot replace {}", path.display()));
    }
    Ok(())
}

/// What the command line says about the connection.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub server: Option<String>,
    pub token: Option<String>,
    pub profile: Option<String>,
}

/// The server and token to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub server: String,
    pub token: Option<String>,
    /// The profile that was read, if any.
    pub profile: Option<String>,
}

impl Connection {
    /// The token, or the error that explains how to get one.
    pub fn require_token(&self) -> anyhow::Result<&str> {
        match &self.token {
            Some(token) => Ok(token),
            None => bail!(
                "no token: pass --token, set SUANLI_TOKEN or use --profile; `suanli demo` writes \
                 profiles"
            ),
        }
    }
}

/// Resolves server and token from the process's flags, environment and config file. The file is
/// read only when flags and environment leave something open.
pub fn resolve(flags: &Flags) -> anyhow::Result<Connection> {
    resolve_with(flags, env_var, || {
        let path = config_path();
        load(&path).map(|config| (path, config))
    })
}

/// [`resolve`], with the environment read by `env` and the config file by `config`.
pub fn resolve_with(
    flags: &Flags,
    env: impl Fn(&str) -> Option<String>,
    config: impl FnOnce() -> anyhow::Result<(PathBuf, Config)>,
) -> anyhow::Result<Connection> {
    let server = flags.server.clone().or_else(|| env("SUANLI_SERVER"));
    let token = flags.token.clone().or_else(|| env("SUANLI_TOKEN"));
    let explicit_profile = flags.profile.clone().or_else(|| env("SUANLI_PROFILE"));

    if let (Some(server), Some(token), None) = (&server, &token, &explicit_profile) {
        return Ok(Connection {
            server: server.clone(),
            token: Some(token.clone()),
            profile: None,
        });
    }

    let (path, config) = config()?;
    let profile_name = explicit_profile.or_else(|| config.default_profile.clone());
    let profile = match &profile_name {
        Some(name) => match config.profiles.get(name) {
            Some(profile) => Some(profile),
            None => {
                let known: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
                bail!(
                    "no profile {name:?} in {} (profiles: {})",
                    path.display(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                );
            }
        },
        None => None,
    };
    let server = server
        .or_else(|| profile.and_then(|p| p.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = token.or_else(|| profile.and_then(|p| p.token.clone()));
    Ok(Connection {
        server,
        token,
        profile: profile_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = suanli_clock::since_epoch().as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "suanli-profiles-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn profile(server: &str, token: &str) -> Profile {
        Profile {
            server: Some(server.to_owned()),
            token: Some(token.to_owned()),
            org_id: Some("org_1".to_owned()),
            org_name: None,
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn config_path_follows_the_environment() {
        let path = config_path_with(env_of(&[("SUANLI_CONFIG", "/x/c.toml"), ("HOME", "/h")]));
        assert_eq!(path, PathBuf::from("/x/c.toml"));
        let path = config_path_with(env_of(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/h")]));
        assert_eq!(path, PathBuf::from("/xdg/suanli/config.toml"));
        let path = config_path_with(env_of(&[("HOME", "/h")]));
        assert_eq!(path, PathBuf::from("/h/.config/suanli/config.toml"));
    }

    #[test]
    fn save_merges_and_keeps_other_profiles() {
        let dir = temp_dir("merge");
        let path = dir.join("nested").join("config.toml");
        assert_eq!(load(&path).unwrap(), Config::default());

        save_profiles(
            &path,
            &[("a".into(), profile("http://a", "sk_a"))],
            Some("a"),
        )
        .unwrap();
        save_profiles(
            &path,
            &[
                ("b".into(), profile("http://b", "sk_b")),
                ("a".into(), profile("http://a2", "sk_a2")),
            ],
            None,
        )
        .unwrap();

        let config = load(&path).unwrap();
        assert_eq!(config.default_profile.as_deref(), Some("a"));
        assert_eq!(config.profiles.len(), 2);
        assert_eq!(config.profiles["a"], profile("http://a2", "sk_a2"));
        assert_eq!(config.profiles["b"], profile("http://b", "sk_b"));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("config.toml")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_documented_file_parses_and_a_broken_one_is_an_error() {
        let dir = temp_dir("parse");
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "default_profile = \"enterprise\"\n[profiles.enterprise]\nserver = \"http://h:1\"\n\
             token = \"sk_e\"\norg_id = \"org_e\"\norg_name = \"Acme\"\n",
        )
        .unwrap();
        let config = load(&path).unwrap();
        assert_eq!(
            config.profiles["enterprise"].org_name.as_deref(),
            Some("Acme")
        );

        std::fs::write(&path, "profiles = 3").unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.to_string().contains("cannot parse"), "{err}");
        // A broken file is never overwritten.
        assert!(save_profiles(&path, &[("x".into(), Profile::default())], None).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "profiles = 3");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn config_with_profiles() -> anyhow::Result<(PathBuf, Config)> {
        let mut config = Config {
            default_profile: Some("d".into()),
            ..Config::default()
        };
        config
            .profiles
            .insert("d".into(), profile("http://d", "sk_d"));
        config
            .profiles
            .insert("p".into(), profile("http://p", "sk_p"));
        config
            .profiles
            .insert("tokenless".into(), Profile::default());
        Ok((PathBuf::from("/c.toml"), config))
    }

    #[test]
    fn flags_beat_environment_beat_profile_beat_default() {
        let none = Flags::default();
        let conn = resolve_with(&none, env_of(&[]), config_with_profiles).unwrap();
        assert_eq!(
            (conn.server.as_str(), conn.token.as_deref()),
            ("http://d", Some("sk_d"))
        );
        assert_eq!(conn.profile.as_deref(), Some("d"));

        let conn = resolve_with(
            &none,
            env_of(&[("SUANLI_PROFILE", "p")]),
            config_with_profiles,
        )
        .unwrap();
        assert_eq!(
            (conn.server.as_str(), conn.token.as_deref()),
            ("http://p", Some("sk_p"))
        );

        let env = env_of(&[("SUANLI_PROFILE", "p"), ("SUANLI_TOKEN", "sk_env")]);
        let flags = Flags {
            profile: Some("d".into()),
            ..Flags::default()
        };
        let conn = resolve_with(&flags, env, config_with_profiles).unwrap();
        assert_eq!(
            (conn.server.as_str(), conn.token.as_deref()),
            ("http://d", Some("sk_env"))
        );

        let env = env_of(&[("SUANLI_SERVER", "http://env"), ("SUANLI_TOKEN", "sk_env")]);
        let flags = Flags {
            token: Some("sk_flag".into()),
            ..Flags::default()
        };
        let conn = resolve_with(&flags, env, || -> anyhow::Result<(PathBuf, Config)> {
            panic!("the config is not read when flags and environment suffice")
        })
        .unwrap();
        assert_eq!(
            (conn.server.as_str(), conn.token.as_deref()),
            ("http://env", Some("sk_flag"))
        );

        let flags = Flags {
            profile: Some("tokenless".into()),
            ..Flags::default()
        };
        let conn = resolve_with(&flags, env_of(&[]), config_with_profiles).unwrap();
        assert_eq!(conn.server, DEFAULT_SERVER);
        let err = conn.require_token().unwrap_err().to_string();
        assert!(err.starts_with("no token: pass --token"), "{err}");

        let flags = Flags {
            profile: Some("missing".into()),
            ..Flags::default()
        };
        let err = resolve_with(&flags, env_of(&[]), config_with_profiles).unwrap_err();
        assert!(err.to_string().contains("no profile \"missing\""), "{err}");

        let conn = resolve_with(&none, env_of(&[]), || {
            Ok((PathBuf::new(), Config::default()))
        })
        .unwrap();
        assert_eq!(
            conn,
            Connection {
                server: DEFAULT_SERVER.into(),
                token: None,
                profile: None
            }
        );
    }
}

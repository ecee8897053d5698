//! `--config node.toml`: the same settings as the flags, from a file. A field is the flag's
//! name in snake case (`heartbeat_interval_ms = 150`, `data_dir = "/var/lib/ringkv"`); a flag
//! given on the command line (or by environment) overrides the file. An unknown field, a value
//! of the wrong type, or an unreadable file is a configuration error naming the field.
//!
//! Implementation: the file's fields become the flags they name, appended to the command line
//! before clap parses it, so the file gets exactly the flags' parsing and validation.

use std::ffi::OsString;

use clap::parser::ValueSource;

use crate::config::ConfigError;

fn err(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// `argv` with the settings of the `--config` file (if any) appended as flags.
pub fn expand(cmd: &clap::Command, argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    // Parse errors are reported by the real parse that follows.
    let Ok(matches) = cmd.clone().try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    if matches.subcommand().is_some() {
        return Ok(argv);
    }
    let Some(path) = matches.get_one::<std::path::PathBuf>("config") else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("config", format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        err("config", format!("{}: {}", path.display(), e.message()))
    })?;
    let mut out = argv;
    for (key, value) in table {
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_id() == key.as_str() && a.get_long().is_some())
        else {
            return Err(err(&key, format!("unknown field in {}", path.display())));
        };
        if key == "config" {
            return Err(err(&key, "a config file cannot name another"));
        }
        if matches!(
            matches.value_source(&key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = format!("--{}", arg.get_long().unwrap_or_default());
        match value {
            toml::Value::String(s) => out.extend([long.into(), s.into()]),
            toml::Value::Integer(i) => out.extend([long.into(), i.to_string().into()]),
            toml::Value::Float(f) => out.extend([long.into(), f.to_string().into()]),
            toml::Value::Boolean(true) => out.push(long.into()),
            toml::Value::Boolean(false) => {}
            other => {
                return Err(err(
                    &key,
                    format!(
                        "expected a string, number or boolean, got {}",
                        other.type_str()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

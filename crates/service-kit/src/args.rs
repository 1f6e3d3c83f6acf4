//! The command line every binary takes: `--config FILE`, `--help`,
//! `--version`, and `mint-token ...` (see [`crate::mint_token`]).
//! Everything else is configured by settings.

use std::path::PathBuf;

use crate::error::SettingsError;
use crate::mint_token::MintArgs;

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run {
        config_file: Option<PathBuf>,
    },
    Help,
    Version,
    /// `mint-token ...`: print a token and exit.
    MintToken(MintArgs),
}

/// Parses `--config FILE`, `--config=FILE`, `--help` and `--version`.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, SettingsError> {
    let mut config_file = None;
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("mint-token") {
        args.next();
        return MintArgs::parse(args).map(Command::MintToken);
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--config" | "-c" => {
                let file = args
                    .next()
                    .ok_or_else(|| SettingsError::Usage("--config needs a file".into()))?;
                config_file = Some(PathBuf::from(file));
            }
            other => match other.strip_prefix("--config=") {
                Some(file) => config_file = Some(PathBuf::from(file)),
                None => {
                    return Err(SettingsError::Usage(format!(
                        "unknown argument {other:?}; try --help"
                    )));
                }
            },
        }
    }
    Ok(Command::Run { config_file })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn arguments_give_the_config_file() {
        let args = |a: &[&str]| parse_args(a.iter().map(|s| s.to_string()));
        assert_eq!(args(&[]).unwrap(), Command::Run { config_file: None });
        assert_eq!(
            args(&["--config", "a.toml"]).unwrap(),
            Command::Run {
                config_file: Some("a.toml".into())
            }
        );
        assert_eq!(
            args(&["--config=b.toml"]).unwrap(),
            Command::Run {
                config_file: Some("b.toml".into())
            }
        );
        assert_eq!(args(&["--help"]).unwrap(), Command::Help);
        assert_eq!(args(&["--version"]).unwrap(), Command::Version);
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--config"]).is_err());
        assert!(matches!(
            args(&["mint-token", "--secret-env", "S"]).unwrap(),
            Command::MintToken(_)
        ));
    }
}

//! A service's own settings section, and the sections a binary runs.
//!
//! Each service crate owns its section (`publish` in ingest, `stream` in the
//! gateway): its keys, defaults and rules live beside the code they
//! configure. A binary loads the common sections plus the [`Sections`] of
//! the parts it runs, so a rule of a part it does not run cannot stop it.

use std::fmt::Debug;
use std::marker::PhantomData;

use config::{Config, ConfigError};
use serde::Deserialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor,
};

use crate::error::SettingsError;

/// Every service section, run or not by a given binary. A binary ignores
/// the ones it does not run (so one file or one environment can configure
/// every service; the service that runs a section checks it), and refuses
/// any other section as unknown. The standalone crate, which runs both,
/// tests that this list names exactly its sections.
pub const SERVICE_SECTIONS: [&str; 2] = ["publish", "stream"];

/// One service's settings: `[NAME]` in a file, `ES__NAME__<KEY>` in the
/// environment.
pub trait Section: DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    /// The section's name, one of [`SERVICE_SECTIONS`].
    const NAME: &'static str;
    /// The built-in defaults: the body of the TOML table, every key once
    /// (a key not here is unknown). The README's table of keys mirrors it.
    const DEFAULTS: &'static str;

    /// Rules serde cannot express; see [`rule`] and [`at_least_one`].
    fn check(&self) -> Result<(), SettingsError>;

    /// Events a subscriber may fall behind on the bus, if this section's
    /// part subscribes; `None` leaves the bus's default.
    fn queue_capacity(&self) -> Option<usize> {
        None
    }
}

/// The sections a binary runs: none (`()`), one [`Section`], or two.
pub trait Sections: Clone + Debug + Send + Sync + Sized + 'static {
    /// Their names.
    fn names() -> Vec<&'static str>;
    /// Their defaults, as TOML tables.
    fn defaults() -> String;
    /// Reads them from the loaded configuration.
    fn extract(config: &Config) -> Result<Self, ConfigError>;
    /// Checks each one's rules.
    fn check(&self) -> Result<(), SettingsError>;
    /// The first [`Section::queue_capacity`] any of them asks for.
    fn queue_capacity(&self) -> Option<usize>;
}

impl Sections for () {
    fn names() -> Vec<&'static str> {
        Vec::new()
    }
    fn defaults() -> String {
        String::new()
    }
    fn extract(_: &Config) -> Result<Self, ConfigError> {
        Ok(())
    }
    fn check(&self) -> Result<(), SettingsError> {
        Ok(())
    }
    fn queue_capacity(&self) -> Option<usize> {
        None
    }
}

impl<S: Section> Sections for S {
    fn names() -> Vec<&'static str> {
        vec![S::NAME]
    }
    fn defaults() -> String {
        format!("[{}]\n{}\n", S::NAME, S::DEFAULTS)
    }
    fn extract(config: &Config) -> Result<Self, ConfigError> {
        pick(config, S::NAME)
    }
    fn check(&self) -> Result<(), SettingsError> {
        Section::check(self)
    }
    fn queue_capacity(&self) -> Option<usize> {
        Section::queue_capacity(self)
    }
}

impl<A: Section, B: Section> Sections for (A, B) {
    fn names() -> Vec<&'static str> {
        vec![A::NAME, B::NAME]
    }
    fn defaults() -> String {
        <A as Sections>::defaults() + &<B as Sections>::defaults()
    }
    fn extract(config: &Config) -> Result<Self, ConfigError> {
        Ok((pick(config, A::NAME)?, pick(config, B::NAME)?))
    }
    fn check(&self) -> Result<(), SettingsError> {
        Section::check(&self.0)?;
        Section::check(&self.1)
    }
    fn queue_capacity(&self) -> Option<usize> {
        Section::queue_capacity(&self.0).or_else(|| Section::queue_capacity(&self.1))
    }
}

/// The section `name` of `config`. Read from the whole tree, not with
/// `Config::get`, so that an error names the key in full (`stream.retry_ms`,
/// not `stream`).
fn pick<T: DeserializeOwned>(config: &Config, name: &'static str) -> Result<T, ConfigError> {
    Pick {
        name,
        section: PhantomData,
    }
    .deserialize(config.clone())
}

/// Deserializes one entry of a map, skipping the others.
struct Pick<T> {
    name: &'static str,
    section: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Pick<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Pick<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a table with a [{}] section", self.name)
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<T, M::Error> {
        let mut section = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.name {
                section = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        section.ok_or_else(|| de::Error::missing_field(self.name))
    }
}

/// The error for `key` (`section.key`) breaking a rule, naming its
/// environment variable too.
pub fn rule(key: &'static str, why: impl Into<String>) -> SettingsError {
    SettingsError::Rule {
        key,
        env: key.replace('.', "__").to_uppercase(),
        why: why.into(),
    }
}

/// The first of `values` (key, value) that is 0, as a rule error.
pub fn at_least_one(values: &[(&'static str, u64)]) -> Result<(), SettingsError> {
    match values.iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err(rule(key, "must be at least 1")),
        None => Ok(()),
    }
}

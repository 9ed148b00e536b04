//! The registry: which primers a cache knows, by name.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Primer, PrimerDef};
use crate::erased::PrimerHandle;
use crate::error::Error;
use crate::key::Key;
use crate::schedule::{Schedule, ScheduleError};

/// One `#[primer]`'s entry in the link-time list that
/// [`Registry::from_inventory`] reads.
#[doc(hidden)]
pub struct Registration(PrimerHandle);

impl Registration {
    /// `#[primer]` submits one of these per primer.
    pub const fn new(handle: PrimerHandle) -> Self {
        Registration(handle)
    }
}

inventory::collect!(Registration);

/// The primers a cache knows, by name, validated: names are unique, every
/// `depends_on` is registered, and primers do not depend on each other in a
/// cycle (a primer may list itself, to read its own products of other
/// parameters, such as yesterday's running total).
///
/// ```
/// use kck_core::primer::Registry;
/// use kck_core::{primer, Ctx};
///
/// #[primer(key = "greeting/{name}")]
/// async fn greeting(_ctx: &Ctx, name: String) -> Result<String, std::convert::Infallible> {
///     Ok(format!("hello, {name}"))
/// }
///
/// // Every primer linked into the binary:
/// let all = Registry::from_inventory()?;
/// assert!(all.get("greeting").is_some());
///
/// // Or exactly the ones you name:
/// let some = Registry::builder().register::<greeting>().build()?;
/// assert_eq!(some.primers().count(), 1);
/// let key = some.parse_key("greeting/world")?;
/// assert_eq!(key.params().next().as_deref(), Some("world"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Inventory only sees primers of crates that are linked: a crate of primers
/// that the binary never references is dropped by the linker. Calling one of
/// its getters links it; otherwise write `use my_primers as _;`, or register
/// its primers explicitly.
#[derive(Clone)]
pub struct Registry {
    primers: Arc<HashMap<&'static str, PrimerHandle>>,
    /// The parsed schedules of the primers that have one.
    schedules: Arc<HashMap<&'static str, Schedule>>,
}

impl Registry {
    /// A builder to register primers one by one.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder {
            handles: Vec::new(),
        }
    }

    /// Every primer linked into the program.
    ///
    /// # Errors
    ///
    /// See [`RegistryBuilder::build`].
    pub fn from_inventory() -> Result<Registry, RegistryError> {
        Registry::builder().register_inventory().build()
    }

    /// The primer named `name`.
    pub fn get(&self, name: &str) -> Option<&'static PrimerDef> {
        self.primers.get(name).map(PrimerHandle::def)
    }

    /// Every registered primer, sorted by name.
    pub fn primers(&self) -> impl Iterator<Item = &'static PrimerDef> + '_ {
        let mut defs: Vec<_> = self.primers.values().map(PrimerHandle::def).collect();
        defs.sort_by_key(|def| def.name);
        defs.into_iter()
    }

    /// The parsed cron schedule of the primer named `name`, if it has one.
    pub fn schedule(&self, name: &str) -> Option<&Schedule> {
        self.schedules.get(name)
    }

    /// Parses a key string and checks it against its primer: the primer is
    /// registered, and the parameters are as many as it takes, parse as its
    /// parameter types, and are written in canonical form.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] or [`Error::UnknownPrimer`].
    pub fn parse_key(&self, text: &str) -> Result<Key, Error> {
        let key = Key::parse(text)?;
        self.check_key(&key)?;
        Ok(key)
    }

    /// Checks a key against its primer, as [`Registry::parse_key`] does.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] or [`Error::UnknownPrimer`].
    pub fn check_key(&self, key: &Key) -> Result<(), Error> {
        let handle = self.handle(key.primer())?;
        (handle.check_key)(key)?;
        Ok(())
    }

    pub(crate) fn handle(&self, name: &str) -> Result<&PrimerHandle, Error> {
        self.primers.get(name).ok_or_else(|| Error::UnknownPrimer {
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.primers().map(|def| def.name))
            .finish()
    }
}

/// Builds a [`Registry`]; see there.
#[derive(Debug)]
pub struct RegistryBuilder {
    handles: Vec<PrimerHandle>,
}

impl RegistryBuilder {
    /// Registers `P`. Registering the same primer twice is harmless.
    pub fn register<P: Primer>(mut self) -> Self {
        self.handles.push(PrimerHandle::of::<P>());
        self
    }

    /// Registers every primer linked into the program.
    pub fn register_inventory(mut self) -> Self {
        self.handles
            .extend(inventory::iter::<Registration>.into_iter().map(|r| r.0));
        self
    }

    /// Validates and builds the registry.
    ///
    /// # Errors
    ///
    /// Every problem found, at once: two different primers with the same
    /// name, a `depends_on` naming a primer that is not registered, and
    /// primers that depend on each other in a cycle.
    pub fn build(self) -> Result<Registry, RegistryError> {
        let mut primers: HashMap<&'static str, PrimerHandle> = HashMap::new();
        let mut problems = Vec::new();
        for handle in self.handles {
            let name = handle.def.name;
            match primers.get(name) {
                Some(first) if (first.primer_type)() != (handle.primer_type)() => {
                    problems.push(RegistryError::DuplicateName {
                        name,
                        first: first.def.location,
                        second: handle.def.location,
                    });
                }
                Some(_) => {}
                None => {
                    primers.insert(name, handle);
                }
            }
        }
        let mut names: Vec<&'static str> = primers.keys().copied().collect();
        names.sort_unstable();
        for &name in &names {
            for &dependency in primers[name].def.depends_on {
                if !primers.contains_key(dependency) {
                    problems.push(RegistryError::UnknownDependency {
                        primer: name,
                        dependency,
                    });
                }
            }
        }
        if let Some(path) = find_cycle(&names, &primers) {
            problems.push(RegistryError::Cycle { path });
        }
        let mut schedules = HashMap::new();
        for &name in &names {
            let Some(pattern) = primers[name].def.policy.schedule else {
                continue;
            };
            match Schedule::parse(pattern) {
                Ok(schedule) => {
                    schedules.insert(name, schedule);
                }
                Err(error) => problems.push(RegistryError::BadSchedule {
                    primer: name,
                    error,
                }),
            }
        }
        match problems.len() {
            0 => Ok(Registry {
                primers: Arc::new(primers),
                schedules: Arc::new(schedules),
            }),
            1 => Err(problems.remove(0)),
            _ => Err(RegistryError::Several(problems)),
        }
    }
}

/// A cycle among the declared dependencies of different primers, as the path
/// `a -> b -> a`. Self-dependencies are allowed and skipped.
fn find_cycle(
    names: &[&'static str],
    primers: &HashMap<&'static str, PrimerHandle>,
) -> Option<Vec<&'static str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        name: &'static str,
        primers: &HashMap<&'static str, PrimerHandle>,
        marks: &mut HashMap<&'static str, Mark>,
        path: &mut Vec<&'static str>,
    ) -> Option<Vec<&'static str>> {
        marks.insert(name, Mark::OnPath);
        path.push(name);
        let dependencies = primers.get(name).map_or(&[][..], |h| h.def.depends_on);
        for &next in dependencies {
            if next == name || !primers.contains_key(next) {
                continue;
            }
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let start = path.iter().position(|&n| n == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, primers, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    for &name in names {
        if marks.get(name).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(cycle) = visit(name, primers, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// Why a set of primers cannot form a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two different primers have the same name.
    #[error("two primers are named `{name}`: one at {first}, one at {second}")]
    DuplicateName {
        /// The name.
        name: &'static str,
        /// Where the first one is defined.
        first: &'static str,
        /// Where the second one is defined.
        second: &'static str,
    },
    /// A primer's `depends_on` names a primer that is not registered.
    #[error("primer `{primer}` depends on `{dependency}`, which is not registered")]
    UnknownDependency {
        /// The primer.
        primer: &'static str,
        /// Its missing dependency.
        dependency: &'static str,
    },
    /// Primers depend on each other in a cycle.
    #[error("primers depend on each other in a cycle: {}", path.join(" -> "))]
    Cycle {
        /// The cycle; it starts and ends with the same primer.
        path: Vec<&'static str>,
    },
    /// A primer's `schedule` is not a valid cron pattern (`#[primer]`
    /// checks it at compile time; primers implemented by hand are checked
    /// here).
    #[error("primer `{primer}`: {error}")]
    BadSchedule {
        /// The primer.
        primer: &'static str,
        /// What is wrong with its schedule.
        error: ScheduleError,
    },
    /// A stub was given for a primer that is not registered.
    #[error("a stub was given for `{name}`, which is not registered")]
    UnknownStub {
        /// The stubbed primer.
        name: &'static str,
    },
    /// More than one problem.
    #[error("{} problems with the registered primers: {}", .0.len(), DisplayAll(.0))]
    Several(Vec<RegistryError>),
}

struct DisplayAll<'a>(&'a [RegistryError]);

impl std::fmt::Display for DisplayAll<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

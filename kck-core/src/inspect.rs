//! What an operator asks of a running cache: which products it holds and
//! in what state, why, what they read and what reads them, which primers
//! there are, and which refresh jobs wait, run or failed, with the means to
//! retry or cancel them.
//!
//! Everything here goes through [`Cache::inspect`], reads the store's
//! [`Catalog`] and [`Queue`](crate::storage::Queue), and never computes a
//! product: looking at a cache does not change it (but for
//! [`Inspector::retry_job`] and [`Inspector::cancel_job`], which say so).
//! Every query is bounded, so that it stays cheap on a store of millions
//! of products: pages have a limit and examine a bounded number of entries,
//! counts have a cap, graphs have a depth and a node budget.
//!
//! ```
//! use kck_core::inspect::ProductFilter;
//! use kck_core::storage::ProductState;
//! use kck_core::{Cache, Ctx, primer};
//!
//! #[primer(key = "inspected_square/{n}")]
//! async fn inspected_square(_ctx: &Ctx, n: u32) -> Result<u64, kck_core::error::BoxError> {
//!     Ok(u64::from(n) * u64::from(n))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder().build()?;
//! inspected_square(&cache, 3).await?;
//!
//! let page = cache
//!     .inspect()
//!     .products(&ProductFilter::primer("inspected_square").limit(10))
//!     .await?;
//! assert_eq!(page.products.len(), 1);
//! assert_eq!(page.products[0].state, ProductState::Fresh);
//!
//! let detail = cache.inspect().product(&page.products[0].key).await?.expect("stored");
//! assert_eq!(detail.value, serde_json::json!(9));
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::cache::Cache;
use crate::error::Error;
use crate::key::Key;
use crate::primer::PrimerDef;
pub use crate::storage::Neighbour;
use crate::storage::{
    Catalog, Census, FailedJob, JobId, KeyJobs, PendingJob, ProductPage, ProductQuery,
    ProductRecord, ProductState, ProductSummary, RunningJob,
};

/// Looks at a cache; see [the module](self). Cheap to make: a borrow of
/// the cache.
#[derive(Debug, Clone, Copy)]
pub struct Inspector<'c> {
    cache: &'c Cache,
}

/// Which products [`Inspector::products`] lists: built from
/// [`ProductFilter::all`] or [`ProductFilter::primer`], narrowed with its
/// methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductFilter {
    primer: Option<String>,
    state: Option<ProductState>,
    after: Option<Key>,
    limit: usize,
}

impl ProductFilter {
    /// The most products a page holds.
    pub const MAX_LIMIT: usize = 1000;

    /// Products of every primer, 50 to a page.
    pub fn all() -> Self {
        ProductFilter {
            primer: None,
            state: None,
            after: None,
            limit: 50,
        }
    }

    /// Products of the primer `name` only.
    pub fn primer(name: impl Into<String>) -> Self {
        ProductFilter {
            primer: Some(name.into()),
            ..ProductFilter::all()
        }
    }

    /// Only products in `state`.
    #[must_use]
    pub fn state(mut self, state: ProductState) -> Self {
        self.state = Some(state);
        self
    }

    /// The page after `key` (the previous page's
    /// [`next`](ProductPage::next)).
    #[must_use]
    pub fn after(mut self, key: Key) -> Self {
        self.after = Some(key);
        self
    }

    /// At most `limit` products (1 to [`ProductFilter::MAX_LIMIT`]; others
    /// are brought into that range).
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.clamp(1, Self::MAX_LIMIT);
        self
    }
}

impl Default for ProductFilter {
    fn default() -> Self {
        ProductFilter::all()
    }
}

/// One product, all of it: what a listing shows, its value, what it read
/// and what reads it, and its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductDetail {
    /// Its key, version, metadata, state and size.
    pub summary: ProductSummary,
    /// Its value as stored (JSON), whether or not it still decodes as its
    /// primer's type.
    pub value: serde_json::Value,
    /// What its last computation read, in first-read order.
    pub dependencies: Vec<Neighbour>,
    /// What read it, by key.
    pub dependents: Vec<Neighbour>,
    /// Its refresh jobs: waiting, running, failed.
    pub jobs: KeyJobs,
}

/// A primer and how many of its products are in each state.
#[derive(Debug, Clone)]
pub struct PrimerSummary {
    /// Its name, key template, policy and declared dependencies.
    pub def: &'static PrimerDef,
    /// Its products per state.
    pub census: Census,
}

/// The refresh jobs of a cache's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jobs {
    /// Waiting to run, in claim order.
    pub pending: Vec<PendingJob>,
    /// Claimed by a worker, earliest lease end first.
    pub running: Vec<RunningJob>,
    /// Kept as failed after their last attempt.
    pub failed: Vec<FailedJob>,
}

/// A part of the dependency graph: products and who read whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// The products, the one asked about first, then by distance.
    pub nodes: Vec<GraphNode>,
    /// `(dependent, dependency)`: the first read the second.
    pub edges: Vec<(Key, Key)>,
    /// Whether products were left out to keep to the node budget.
    pub truncated: bool,
}

/// A product in a [`Graph`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphNode {
    /// Its key.
    pub key: Key,
    /// Its state, or `None` if it is not stored.
    pub state: Option<ProductState>,
    /// How far from the product asked about: negative towards what it
    /// reads, positive towards what reads it.
    pub distance: i32,
}

/// The primers and the `depends_on` declarations between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrimerGraph {
    /// Every registered primer, by name.
    pub primers: Vec<&'static str>,
    /// `(primer, dependency)`: the first declares it may read the second.
    pub edges: Vec<(&'static str, &'static str)>,
}

impl Cache {
    /// Looks at this cache: its products, primers, jobs and graph. See
    /// [`inspect`](crate::inspect).
    pub fn inspect(&self) -> Inspector<'_> {
        Inspector { cache: self }
    }
}

impl<'c> Inspector<'c> {
    /// The cache inspected.
    pub fn cache(&self) -> &'c Cache {
        self.cache
    }

    fn catalog(&self) -> Result<&'c dyn Catalog, Error> {
        self.cache
            .storage()
            .catalog()
            .map(|catalog| &**catalog)
            .ok_or(Error::NoCatalog)
    }

    fn check_primer(&self, name: &str) -> Result<(), Error> {
        match self.cache.registry().get(name) {
            Some(_) => Ok(()),
            None => Err(Error::UnknownPrimer {
                name: name.to_owned(),
            }),
        }
    }

    /// A page of products, in primer then key order; the state of each is
    /// judged now, and a product this process is computing is `computing`.
    /// A page examines at most [`ProductQuery::DEFAULT_SCAN`] entries: with
    /// a rare state, it may hold fewer products than its limit, and its
    /// [`next`](ProductPage::next) says where to go on.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPrimer`] for a primer that is not registered,
    /// [`Error::NoCatalog`], [`Error::Store`].
    pub async fn products(&self, filter: &ProductFilter) -> Result<ProductPage, Error> {
        if let Some(primer) = &filter.primer {
            self.check_primer(primer)?;
        }
        let mut query = ProductQuery::new(filter.limit, self.cache.now());
        query.primer.clone_from(&filter.primer);
        query.after.clone_from(&filter.after);
        // Products computing here are found among the stored ones in any
        // state but failing and expired, and shown as computing.
        let overlay = matches!(filter.state, Some(ProductState::Computing));
        if !overlay {
            query.state = filter.state;
        }
        let mut page = self.catalog()?.products(&query).await?;
        for product in &mut page.products {
            product.state = self.state_here(&product.key, product.state);
        }
        if let Some(state) = filter.state {
            page.products.retain(|product| product.state == state);
        }
        Ok(page)
    }

    /// A product's state as this process sees it: computing if it computes
    /// it (and it is neither failing nor expired), as stored otherwise.
    fn state_here(&self, key: &Key, stored: ProductState) -> ProductState {
        match stored {
            ProductState::Fresh | ProductState::Stale if self.cache.is_computing_here(key) => {
                ProductState::Computing
            }
            state => state,
        }
    }

    /// One product: its metadata, state, value, neighbours and jobs;
    /// `None` if it is not stored.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPrimer`] for a key of no registered primer,
    /// [`Error::InvalidKey`] for a key that does not fit its primer,
    /// [`Error::NoCatalog`], [`Error::Store`] (also when the stored value is
    /// not JSON).
    pub async fn product(&self, key: &Key) -> Result<Option<ProductDetail>, Error> {
        self.cache.registry().check_key(key)?;
        let catalog = self.catalog()?;
        let Some(record) = catalog.detail(key, self.cache.now()).await? else {
            return Ok(None);
        };
        let ProductRecord {
            mut summary,
            value,
            mut dependencies,
            mut dependents,
            jobs,
        } = record;
        // The catalog's jobs are its own queue's: the cache's only if the
        // cache's queue is that same object.
        let queue = self.cache.queue();
        let jobs = match jobs {
            Some(jobs) if std::ptr::addr_eq(Arc::as_ptr(queue), std::ptr::from_ref(catalog)) => {
                jobs
            }
            _ => queue.jobs_of(key).await?,
        };
        summary.state = self.state_here(key, summary.state);
        for neighbour in dependencies.iter_mut().chain(&mut dependents) {
            if let Some((_, state)) = &mut neighbour.stored {
                *state = self.state_here(&neighbour.key, *state);
            }
        }
        Ok(Some(ProductDetail {
            summary,
            value,
            dependencies,
            dependents,
            jobs,
        }))
    }

    /// The listing's view of one key, with this process's computations.
    async fn summary(&self, key: &Key) -> Result<Option<ProductSummary>, Error> {
        let mut summary = self.catalog()?.product(key, self.cache.now()).await?;
        if let Some(summary) = &mut summary {
            summary.state = self.state_here(key, summary.state);
        }
        Ok(summary)
    }

    /// Every registered primer, by name, with its products per state,
    /// counting at most `cap` products of each (the census says whether it
    /// counted them all).
    ///
    /// # Errors
    ///
    /// [`Error::NoCatalog`], [`Error::Store`].
    pub async fn primers(&self, cap: usize) -> Result<Vec<PrimerSummary>, Error> {
        let catalog = self.catalog()?;
        let now = self.cache.now();
        let mut defs: Vec<&'static PrimerDef> = self.cache.registry().primers().collect();
        defs.sort_by_key(|def| def.name);
        let mut primers = Vec::with_capacity(defs.len());
        for def in defs {
            let census = catalog.census(def.name, now, cap).await?;
            primers.push(PrimerSummary { def, census });
        }
        Ok(primers)
    }

    /// The registered primers and the dependencies they declare.
    pub fn primer_graph(&self) -> PrimerGraph {
        let mut primers: Vec<&'static str> = self
            .cache
            .registry()
            .primers()
            .map(|def| def.name)
            .collect();
        primers.sort_unstable();
        let mut edges: Vec<(&'static str, &'static str)> = self
            .cache
            .registry()
            .primers()
            .flat_map(|def| def.depends_on.iter().map(move |dep| (def.name, *dep)))
            .collect();
        edges.sort_unstable();
        PrimerGraph { primers, edges }
    }

    /// The products within `depth` edges of `key`, both ways (what it
    /// reads, and what reads it), breadth first, at most `max_nodes` of
    /// them; the edges between them.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPrimer`] or [`Error::InvalidKey`] for a key of no
    /// registered primer, [`Error::Store`].
    pub async fn graph(&self, key: &Key, depth: u32, max_nodes: usize) -> Result<Graph, Error> {
        self.cache.registry().check_key(key)?;
        let entries = self.cache.storage().entries();
        let depth = i32::try_from(depth).unwrap_or(i32::MAX);
        let max_nodes = max_nodes.max(1);
        let mut graph = Graph::default();
        let mut seen: HashMap<Key, i32> = HashMap::from([(key.clone(), 0)]);
        let mut queue = VecDeque::from([(key.clone(), 0)]);
        let mut edges = Vec::new();
        while let Some((at, distance)) = queue.pop_front() {
            let state = self.summary(&at).await?.map(|s| s.state);
            graph.nodes.push(GraphNode {
                key: at.clone(),
                state,
                distance,
            });
            if distance.abs() >= depth {
                continue;
            }
            // Towards dependencies from the start and the dependency side;
            // towards dependents from the start and the dependent side.
            let mut next = Vec::new();
            if distance <= 0 {
                for edge in entries.dependencies(&at).await? {
                    edges.push((at.clone(), edge.key.clone()));
                    next.push((edge.key, distance - 1));
                }
            }
            if distance >= 0 {
                for edge in entries.dependents(&at).await? {
                    edges.push((edge.key.clone(), at.clone()));
                    next.push((edge.key, distance + 1));
                }
            }
            for (other, distance) in next {
                if seen.contains_key(&other) {
                    continue;
                }
                if seen.len() >= max_nodes {
                    graph.truncated = true;
                    continue;
                }
                seen.insert(other.clone(), distance);
                queue.push_back((other, distance));
            }
        }
        edges.retain(|(a, b)| seen.contains_key(a) && seen.contains_key(b));
        edges.sort();
        edges.dedup();
        graph.edges = edges;
        Ok(graph)
    }

    /// Up to `limit` jobs of each kind: pending, running, and failed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn jobs(&self, limit: usize) -> Result<Jobs, Error> {
        let queue = self.cache.queue();
        Ok(Jobs {
            pending: queue.pending(limit).await?,
            running: queue.running(limit).await?,
            failed: queue.failed(limit).await?,
        })
    }

    /// Puts failed job `id` back in the queue, due now, with its attempts
    /// counted afresh; `false` if there is no failed job `id`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn retry_job(&self, id: JobId) -> Result<bool, Error> {
        Ok(self.cache.queue().retry(id, self.cache.now()).await?)
    }

    /// Removes pending or failed job `id`; `false` if there is none (a
    /// running job is not removed).
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn cancel_job(&self, id: JobId) -> Result<bool, Error> {
        Ok(self.cache.queue().cancel(id).await?)
    }
}

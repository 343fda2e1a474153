//! Hearth's domain vocabulary: jobs, their states and resources, and the messages of the
//! REST API. Shared by the server, the agent and the CLI so that all three agree on one
//! meaning of every word. No I/O here.

pub mod api;
pub mod cluster;
pub mod lifecycle;
pub mod net;
pub mod size;

pub use size::{format_mib, parse_mib, SizeError};

use serde::{Deserialize, Serialize};
use std::fmt;

/// The life of a job. `Queued -> Starting -> Running -> {Succeeded, Failed, Cancelled}`;
/// `Lost` when Hearth could no longer find the job's processes or their exit status. Back
/// to `Queued` after a preemption or a lost run with retries left. Every move is decided
/// by [`lifecycle::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Starting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Starting,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Lost
        )
    }

    /// States in which the job holds resources on a node.
    pub fn holds_resources(self) -> bool {
        matches!(self, JobState::Starting | JobState::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OS memory limit of a JVM with `heap_mib` of heap: the heap plus Spark's own rule for
/// memory beyond it (`spark.driver.memoryOverhead`: 10% of the heap, at least 384 MiB). Jobs
/// and Spark Connect engines alike.
pub fn memory_limit_mib(heap_mib: u64) -> u64 {
    heap_mib + (heap_mib / 10).max(384)
}

/// What a job is made of: one driver and `num_executors` executors. In local mode the
/// executors live inside the driver's JVM, but the job still holds all their resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResources {
    pub driver_cores: u32,
    pub driver_memory_mib: u64,
    pub executor_cores: u32,
    pub executor_memory_mib: u64,
    pub num_executors: u32,
}

impl Default for JobResources {
    fn default() -> Self {
        // spark-submit's own defaults for driver and executor size; one executor so that a
        // job with no flags gets local[2], what people expect from a "small" Spark job.
        JobResources {
            driver_cores: 1,
            driver_memory_mib: 1024,
            executor_cores: 1,
            executor_memory_mib: 1024,
            num_executors: 1,
        }
    }
}

impl JobResources {
    pub fn total_cores(&self) -> u32 {
        self.driver_cores + self.num_executors * self.executor_cores
    }

    /// The JVM heap a local-mode job gets: the driver's plus every executor's.
    pub fn total_memory_mib(&self) -> u64 {
        self.driver_memory_mib + u64::from(self.num_executors) * self.executor_memory_mib
    }

    /// The hard memory limit the OS enforces on the job's whole process tree.
    pub fn memory_limit_mib(&self) -> u64 {
        memory_limit_mib(self.total_memory_mib())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_is_the_heap_plus_sparks_overhead() {
        assert_eq!(memory_limit_mib(512), 512 + 384);
        assert_eq!(memory_limit_mib(10 * 1024), 11 * 1024);
        assert_eq!(JobResources::default().memory_limit_mib(), 2048 + 384);
    }
}

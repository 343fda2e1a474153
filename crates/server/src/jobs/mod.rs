//! Batch jobs: the dispatcher that feeds the scheduler and applies its plans, tasks on
//! nodes (built here, sent through `cluster`, their output and ends recorded), and jobs
//! spread over several nodes on a Spark standalone cluster of their own.

pub mod dispatch;
pub mod remote;
pub mod standalone;

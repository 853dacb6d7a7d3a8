//! The alert actor (to be built): keeps the latest alerts, folds repeats by key and feeds
//! the sinks.

use actix::prelude::*;

use crate::alert::Alert;

/// An alert to keep and deliver.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Raise(pub Alert);

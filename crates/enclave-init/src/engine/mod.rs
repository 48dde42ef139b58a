//! The engine: every decision init makes, as pure state machines.
//!
//! * [`lifecycle`]: one service's life, `(state, event, now) -> actions`.
//! * [`graph`]: who depends on whom, the start and stop gates.
//! * [`orchestrator`]: which service starts or stops when, for all of
//!   them, `Engine::handle(input, now) -> effects`.
//!
//! No I/O, no clock (time is a parameter); imports only the model.

pub mod graph;
pub mod lifecycle;
pub mod orchestrator;

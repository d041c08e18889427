//! Where the agent's logs go and how they look: [`picket_proto::logging`] under the name
//! `picket-agent`: the lines it always wrote (`picket-agent: warning: ...`), or with `--log-format json`
//! one JSON object a line; `PICKET_LOG` filters them (`warn`, `picket_agent::link=debug`).

pub use picket_proto::logging::{Format, FILTER_ENV};

/// Installs the agent's log writer (see [`picket_proto::logging::init`]).
pub fn init(format: Format) {
    picket_proto::logging::init("picket-agent", format);
}

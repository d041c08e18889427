//! Where the collector's logs go and how they look: [`picket_proto::logging`] under the name
//! `picket-collector`: the lines it always wrote (`picket-collector: warning: ...`), or with `--log-format json`
//! one JSON object a line; `PICKET_LOG` filters them (`warn`, `picket_collector::channel=debug`).

pub use picket_proto::logging::{Format, FILTER_ENV};

/// Installs the collector's log writer (see [`picket_proto::logging::init`]).
pub fn init(format: Format) {
    picket_proto::logging::init("picket-collector", format);
}

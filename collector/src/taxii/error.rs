use std::path::PathBuf;

use super::paging::PagingError;

/// Why a TAXII request or pull failed. Each names the URL it is about (scheme, host and path:
/// never a query string and never credentials, which Picket keeps out of URLs altogether).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaxiiError {
    /// The source's settings cannot work: a bad URL, https without a CA file, plain http to a
    /// host that is not this one.
    #[error("TAXII source: {problem}")]
    Config {
        /// What is wrong, naming the setting.
        problem: String,
    },
    /// The CA file could not be read or holds no certificate.
    #[error("TAXII CA file {path}: {problem}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// 401 with credentials: the server does not accept them.
    #[error("the TAXII server refused the credentials for {url} (HTTP 401)")]
    Unauthorized {
        /// The URL asked for.
        url: String,
    },
    /// 401 without credentials.
    #[error("the TAXII server at {url} requires credentials (HTTP 401), and the source has none")]
    CredentialsRequired {
        /// The URL asked for.
        url: String,
    },
    /// 403: the account may not read this.
    #[error("the TAXII server at {url} does not let this account read it (HTTP 403){detail}")]
    Forbidden {
        /// The URL asked for.
        url: String,
        /// The server's message, if any, with a leading `: `.
        detail: String,
    },
    /// 404: no such API root, collection or discovery endpoint.
    #[error("{what} not found: {url} answered HTTP 404{detail}")]
    NotFound {
        /// What was looked for, such as `TAXII collection 91a7b528-…`.
        what: String,
        /// The URL asked for.
        url: String,
        /// The server's message, if any, with a leading `: `.
        detail: String,
    },
    /// 406 or 415: the server does not speak TAXII 2.1 on this URL.
    #[error(
        "{url} answered HTTP {status}: it does not accept {media_type}; is this a TAXII 2.1 endpoint?{detail}",
        media_type = super::TAXII_MEDIA_TYPE
    )]
    NotAcceptable {
        /// The URL asked for.
        url: String,
        /// 406 or 415.
        status: u16,
        /// The server's message, if any, with a leading ` `.
        detail: String,
    },
    /// A redirect. Picket does not follow them: credentials go only where the operator sent them.
    #[error("{url} redirects to {location:?} (HTTP {status}); configure the source with that URL instead")]
    Redirected {
        /// The URL asked for.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Where it points (without its query string).
        location: String,
    },
    /// Any other unsuccessful status.
    #[error("{url} answered HTTP {status}{detail}")]
    Status {
        /// The URL asked for.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's message, if any, with a leading `: `.
        detail: String,
    },
    /// A successful response that is not TAXII 2.1 JSON by its media type.
    #[error("{url}: {problem}")]
    MediaType {
        /// The URL asked for.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// A successful response whose body does not decode.
    #[error("{url}: the response is {problem}")]
    Json {
        /// The URL asked for.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// A response body over the size cap.
    #[error("{url}: the response is larger than the {limit}-byte cap")]
    TooLarge {
        /// The URL asked for.
        url: String,
        /// The cap.
        limit: u64,
    },
    /// A pull over its total size cap.
    #[error("{url}: the pull is larger than the {limit}-byte cap; raise the source's limit")]
    PullTooLarge {
        /// The collection's objects URL.
        url: String,
        /// The cap.
        limit: u64,
    },
    /// The connection failed: DNS, connect, TLS, timeout, a broken response.
    #[error("{url}: {problem}")]
    Transport {
        /// The URL asked for.
        url: String,
        /// What failed.
        problem: String,
    },
    /// Paging could not go on.
    #[error("{url}: {error}")]
    Paging {
        /// The collection's objects URL.
        url: String,
        /// Why.
        error: PagingError,
    },
}

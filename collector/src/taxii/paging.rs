//! The paging core: from what each objects response said, the next request and the bookmark.
//! Pure: no network, no clock. See [`Paging`].

use super::timestamp::Timestamp;

/// The query of one objects request (`GET {api_root}/collections/{id}/objects/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// `added_after`: only objects the server added after this time.
    pub added_after: Option<String>,
    /// `next`: the server's token for the following page of the same result set.
    pub next: Option<String>,
    /// `limit`: the page size asked for (the server may send fewer).
    pub limit: u32,
}

/// What one objects response said, as far as paging is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageInfo {
    /// The envelope's `more` (absent means false).
    pub more: bool,
    /// The envelope's `next`, if any.
    pub next: Option<String>,
    /// The `X-TAXII-Date-Added-First` header, as sent.
    pub date_added_first: Option<String>,
    /// The `X-TAXII-Date-Added-Last` header, as sent.
    pub date_added_last: Option<String>,
    /// How many objects the envelope held.
    pub objects: usize,
}

/// Why paging stopped before the server said it was done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PagingError {
    /// The stored bookmark is not a TAXII timestamp.
    #[error("the bookmark {0:?} is not a TAXII timestamp (YYYY-MM-DDTHH:MM:SS[.fraction]Z)")]
    BadBookmark(String),
    /// A date header is not a TAXII timestamp.
    #[error("page {page}: the server sent a malformed {header} header: {value:?}")]
    BadHeader {
        /// The 1-based page number.
        page: u32,
        /// The header's name.
        header: &'static str,
        /// Its value (lossily decoded).
        value: String,
    },
    /// The server said there is more but gave no way forward.
    #[error(
        "page {page}: the server says there are more objects but sends neither a `next` token nor an \
         X-TAXII-Date-Added-Last later than {after}; stopping rather than asking for the same page again"
    )]
    NoProgress {
        /// The 1-based page number.
        page: u32,
        /// The `added_after` of the request that made no progress (or "the start").
        after: String,
    },
    /// The collection has more pages than the source allows in one pull.
    #[error(
        "the server still had more objects after {pages} pages; raise the source's page size or its \
         page limit"
    )]
    TooManyPages {
        /// How many pages were read.
        pages: u32,
    },
}

/// The state of one pull's paging: from what each objects response said, the next request
/// and the bookmark.
///
/// Pure: no network, no clock. The HTTP shell asks [`Paging`] for the first request, performs
/// it, describes the response as a [`PageInfo`], and asks [`Paging::advance`] for the next one
/// until there is none. Table tests and property tests drive it with made-up responses.
///
/// TAXII 2.1 (its pagination section) sorts the objects of a collection by `date_added`, oldest first, and
/// pages them in two ways, both handled here:
/// - **`next`**: the envelope says `more: true` and gives a `next` token; the client repeats the
///   same query with `next=<token>`. The filter (`added_after`) must stay the same while
///   following tokens (medallion rejects a changed filter with 400).
/// - **`added_after`**: the envelope says `more: true` without a token; the client asks again
///   with `added_after` set to the `X-TAXII-Date-Added-Last` header of the page it has.
///
/// Invariants (each pinned by a property test):
/// - The bookmark never moves backwards: it is the highest `X-TAXII-Date-Added-First/Last`
///   value seen, or the bookmark the pull started from, compared as times (not as text).
/// - Paging ends: after at most `max_pages` responses, and never by asking for the same
///   `added_after` twice (a server that says "more" without moving forward is an error, not a
///   loop).
#[derive(Debug, Clone)]
pub struct Paging {
    limit: u32,
    max_pages: u32,
    /// The `added_after` of the current result set: fixed while following `next` tokens, moved
    /// forward only by `added_after` paging.
    added_after: Option<(Timestamp, String)>,
    /// The highest date seen so far, starting from the stored bookmark.
    bookmark: Option<(Timestamp, String)>,
    pages: u32,
    done: bool,
}

impl Paging {
    /// Starts a pull from `bookmark` (the one the previous pull returned, if any), asking for
    /// `limit` objects a page (at least 1) and reading at most `max_pages` pages (at least 1).
    /// Returns the state and the first request.
    pub fn new(
        bookmark: Option<&str>,
        limit: u32,
        max_pages: u32,
    ) -> Result<(Paging, PageRequest), PagingError> {
        let bookmark = match bookmark {
            Some(text) => Some((
                Timestamp::parse(text).ok_or_else(|| PagingError::BadBookmark(text.to_owned()))?,
                text.to_owned(),
            )),
            None => None,
        };
        let paging = Paging {
            limit: limit.max(1),
            max_pages: max_pages.max(1),
            added_after: bookmark.clone(),
            bookmark,
            pages: 0,
            done: false,
        };
        let first = PageRequest {
            added_after: paging.added_after.as_ref().map(|(_, s)| s.clone()),
            next: None,
            limit: paging.limit,
        };
        Ok((paging, first))
    }

    /// Takes in the response to the last request; returns the next request, or `None` when the
    /// result set is complete. After `None` or an error, every further call returns `None`.
    pub fn advance(&mut self, page: &PageInfo) -> Result<Option<PageRequest>, PagingError> {
        if self.done {
            return Ok(None);
        }
        self.pages = self.pages.saturating_add(1);
        let headers = [
            ("X-TAXII-Date-Added-First", &page.date_added_first),
            ("X-TAXII-Date-Added-Last", &page.date_added_last),
        ];
        for (header, value) in headers {
            let Some(text) = value else { continue };
            let Some(t) = Timestamp::parse(text) else {
                self.done = true;
                return Err(PagingError::BadHeader {
                    page: self.pages,
                    header,
                    value: text.clone(),
                });
            };
            if self.bookmark.as_ref().is_none_or(|(b, _)| t > *b) {
                self.bookmark = Some((t, text.clone()));
            }
        }
        if !page.more {
            self.done = true;
            return Ok(None);
        }
        if self.pages >= self.max_pages {
            self.done = true;
            return Err(PagingError::TooManyPages { pages: self.pages });
        }
        if let Some(next) = page.next.as_ref().filter(|n| !n.is_empty()) {
            return Ok(Some(PageRequest {
                added_after: self.added_after.as_ref().map(|(_, s)| s.clone()),
                next: Some(next.clone()),
                limit: self.limit,
            }));
        }
        // `added_after` paging: only forward, or not at all.
        match &self.bookmark {
            Some((t, text)) if self.added_after.as_ref().is_none_or(|(a, _)| t > a) => {
                self.added_after = Some((*t, text.clone()));
                Ok(Some(PageRequest {
                    added_after: Some(text.clone()),
                    next: None,
                    limit: self.limit,
                }))
            }
            _ => {
                self.done = true;
                Err(PagingError::NoProgress {
                    page: self.pages,
                    after: self
                        .added_after
                        .as_ref()
                        .map_or_else(|| "the start".to_owned(), |(_, s)| s.clone()),
                })
            }
        }
    }

    /// The bookmark to store once the pull has succeeded: the highest date the server reported,
    /// or the one the pull started from. Store it only with everything the pull returned, in one
    /// transaction: a bookmark without its objects skips them forever.
    pub fn bookmark(&self) -> Option<&str> {
        self.bookmark.as_ref().map(|(_, s)| s.as_str())
    }

    /// How many responses have been taken in.
    pub fn pages(&self) -> u32 {
        self.pages
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn page(more: bool, next: Option<&str>, first: Option<&str>, last: Option<&str>) -> PageInfo {
        PageInfo {
            more,
            next: next.map(str::to_owned),
            date_added_first: first.map(str::to_owned),
            date_added_last: last.map(str::to_owned),
            objects: 1,
        }
    }

    fn req(added_after: Option<&str>, next: Option<&str>) -> PageRequest {
        PageRequest {
            added_after: added_after.map(str::to_owned),
            next: next.map(str::to_owned),
            limit: 10,
        }
    }

    /// Runs a scripted pull: each step is a response and the request (or error) it must yield.
    fn check(
        bookmark: Option<&str>,
        first: PageRequest,
        steps: &[(PageInfo, Result<Option<PageRequest>, PagingError>)],
        final_bookmark: Option<&str>,
    ) {
        let (mut p, got) = Paging::new(bookmark, 10, 5).unwrap();
        assert_eq!(got, first);
        for (i, (info, want)) in steps.iter().enumerate() {
            assert_eq!(&p.advance(info), want, "step {i}");
        }
        assert_eq!(p.bookmark(), final_bookmark);
    }

    const T1: &str = "2024-01-01T00:00:01.000000Z";
    const T2: &str = "2024-01-01T00:00:02.000000Z";
    const T3: &str = "2024-01-01T00:00:03Z";

    #[test]
    fn one_page() {
        check(
            None,
            req(None, None),
            &[(page(false, None, Some(T1), Some(T2)), Ok(None))],
            Some(T2),
        );
    }

    #[test]
    fn next_tokens_keep_the_filter_and_the_bookmark_is_the_last_date() {
        check(
            Some(T1),
            req(Some(T1), None),
            &[
                (
                    page(true, Some("abc"), Some(T2), Some(T2)),
                    Ok(Some(req(Some(T1), Some("abc")))),
                ),
                // medallion reuses one token for the whole result set.
                (
                    page(true, Some("abc"), Some(T2), Some(T3)),
                    Ok(Some(req(Some(T1), Some("abc")))),
                ),
                (page(false, None, Some(T3), Some(T3)), Ok(None)),
            ],
            Some(T3),
        );
    }

    #[test]
    fn without_next_pages_by_added_after() {
        check(
            None,
            req(None, None),
            &[
                (
                    page(true, None, Some(T1), Some(T2)),
                    Ok(Some(req(Some(T2), None))),
                ),
                (
                    page(true, Some(""), Some(T3), Some(T3)),
                    Ok(Some(req(Some(T3), None))),
                ),
                (page(false, None, None, None), Ok(None)),
            ],
            Some(T3),
        );
    }

    #[test]
    fn more_without_a_way_forward_is_an_error_not_a_loop() {
        let stuck = Err(PagingError::NoProgress {
            page: 2,
            after: T2.to_owned(),
        });
        check(
            None,
            req(None, None),
            &[
                (
                    page(true, None, Some(T1), Some(T2)),
                    Ok(Some(req(Some(T2), None))),
                ),
                (page(true, None, Some(T2), Some(T2)), stuck),
                (page(true, Some("x"), None, None), Ok(None)),
            ],
            Some(T2),
        );
        let never = Err(PagingError::NoProgress {
            page: 1,
            after: "the start".to_owned(),
        });
        check(
            None,
            req(None, None),
            &[(page(true, None, None, None), never)],
            None,
        );
    }

    #[test]
    fn an_empty_collection_keeps_the_bookmark() {
        check(
            Some(T2),
            req(Some(T2), None),
            &[(PageInfo::default(), Ok(None))],
            Some(T2),
        );
    }

    #[test]
    fn an_older_header_never_moves_the_bookmark_back() {
        check(
            Some(T3),
            req(Some(T3), None),
            &[(page(false, None, Some(T1), Some(T2)), Ok(None))],
            Some(T3),
        );
    }

    #[test]
    fn bookmarks_compare_as_times() {
        // As text, "…:02Z" sorts after "…:02.5Z"; as times it is earlier.
        let later = "2024-01-01T00:00:02.5Z";
        check(
            Some("2024-01-01T00:00:02Z"),
            req(Some("2024-01-01T00:00:02Z"), None),
            &[(page(false, None, Some(later), Some(later)), Ok(None))],
            Some(later),
        );
    }

    #[test]
    fn malformed_inputs_are_named() {
        assert_eq!(
            Paging::new(Some("yesterday"), 10, 5).unwrap_err(),
            PagingError::BadBookmark("yesterday".into())
        );
        check(
            None,
            req(None, None),
            &[(
                page(false, None, Some(T1), Some("soon")),
                Err(PagingError::BadHeader {
                    page: 1,
                    header: "X-TAXII-Date-Added-Last",
                    value: "soon".into(),
                }),
            )],
            Some(T1),
        );
    }

    #[test]
    fn page_limit() {
        let (mut p, _) = Paging::new(None, 10, 2).unwrap();
        assert!(p.advance(&page(true, Some("a"), None, None)).unwrap().is_some());
        assert_eq!(
            p.advance(&page(true, Some("a"), None, None)),
            Err(PagingError::TooManyPages { pages: 2 })
        );
        assert_eq!(p.advance(&page(true, Some("a"), None, None)), Ok(None));
    }

    fn timestamp_text() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => (0i64..4_000_000_000, 0u32..1_000_000, 0usize..3).prop_map(|(s, us, style)| {
                let base = picket_proto::rfc3339(s);
                match style {
                    0 => base,
                    1 => format!("{}.{us:06}Z", base.trim_end_matches('Z')),
                    _ => format!("{}.{}Z", base.trim_end_matches('Z'), us / 1000),
                }
            }),
            1 => "[ -~]{0,30}",
        ]
    }

    fn page_info() -> impl Strategy<Value = PageInfo> {
        (
            // Mostly "more": a server that never stops is the case that must still end.
            proptest::bool::weighted(0.9),
            proptest::option::of(prop_oneof![Just(String::new()), "[a-c]{1,2}"]),
            proptest::option::of(timestamp_text()),
            proptest::option::of(timestamp_text()),
            0usize..20,
        )
            .prop_map(
                |(more, next, date_added_first, date_added_last, objects)| PageInfo {
                    more,
                    next,
                    date_added_first,
                    date_added_last,
                    objects,
                },
            )
    }

    fn when(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    proptest! {
        #[test]
        fn paging_ends_and_the_bookmark_never_moves_back(
            start in proptest::option::of(timestamp_text()),
            limit in 0u32..50,
            max_pages in 0u32..40,
            // Longer than any page limit: the server never runs out of answers.
            pages in proptest::collection::vec(page_info(), 41..60),
        ) {
            let Ok((mut p, first)) = Paging::new(start.as_deref(), limit, max_pages) else {
                prop_assert!(start.as_deref().is_some_and(|s| Timestamp::parse(s).is_none()));
                return Ok(());
            };
            prop_assert_eq!(first.added_after.as_deref(), start.as_deref());
            prop_assert!(first.limit >= 1);
            let mut floor = start.as_deref().map(when);
            let mut asked_after = floor;
            let mut requests = 1u32;
            for info in &pages {
                let step = p.advance(info);
                let now = p.bookmark().map(when);
                prop_assert!(now >= floor, "bookmark moved back: {:?} -> {:?}", floor, now);
                floor = now;
                match step {
                    Ok(Some(request)) => {
                        requests += 1;
                        let after = request.added_after.as_deref().map(when);
                        if request.next.is_none() {
                            // added_after paging: strictly forward.
                            prop_assert!(after > asked_after);
                        } else {
                            prop_assert_eq!(after, asked_after);
                        }
                        asked_after = after;
                    }
                    Ok(None) | Err(_) => {
                        prop_assert_eq!(p.advance(info), Ok(None), "done stays done");
                        break;
                    }
                }
                prop_assert!(requests <= max_pages.max(1), "{} requests, cap {}", requests, max_pages);
            }
            prop_assert!(p.pages() <= max_pages.max(1));
            let more = PageInfo { more: true, next: Some("z".into()), ..PageInfo::default() };
            prop_assert_eq!(p.advance(&more), Ok(None), "ended within the page limit");
        }
    }
}

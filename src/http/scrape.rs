//! `GET /metrics`: the scrape.

use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::{Compression, Crc};
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, VARY};
use http::{HeaderValue, StatusCode};

use super::{HttpError, HttpResponse, now, response};
use crate::app::App;
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Parts, join};

/// `GET /metrics`: rendered (and gzipped when the scraper accepts it, as Prometheus
/// does) on a blocking thread, so a large scrape never stalls webhooks on the async
/// workers; the state's lock is held only to copy pointers.
pub(super) async fn metrics(app: &App, gzip: bool) -> Result<HttpResponse, HttpError> {
    let certs = app.state().snapshot();
    let app = app.clone();
    let body = tokio::task::spawn_blocking(move || {
        let parts = app.metrics().render_parts(&certs, now());
        if gzip {
            gzipped(&parts)
        } else {
            Ok(join(&parts))
        }
    })
    .await
    .map_err(|e| HttpError::Unavailable(format!("rendering metrics failed: {e}")))?
    .map_err(|e| HttpError::Unavailable(format!("compressing metrics failed: {e}")))?;
    let mut response = response(StatusCode::OK, METRICS_CONTENT_TYPE, body);
    let headers = response.headers_mut();
    headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

/// The two halves, joined, as one gzip stream at a fast level (exposition text
/// compresses about tenfold even so). The halves are compressed on two threads, as
/// pigz does: the first half's deflate stream ends with a sync flush (byte-aligned, not
/// final), so the second half's stream continues it, and the CRC-32 of the whole is
/// combined from the halves'.
fn gzipped(parts: &Parts) -> std::io::Result<Vec<u8>> {
    let [first, second] = parts;
    let (first, second) = crate::parallel::both(|| deflate(first, false), || deflate(second, true));
    let ((first, mut crc), (second, second_crc)) = (first?, second?);
    crc.combine(&second_crc);
    /// ID1 ID2, deflate, no flags, no modification time, no extra flags, unknown OS.
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut out = Vec::with_capacity(HEADER.len() + first.len() + second.len() + 8);
    out.extend_from_slice(&HEADER);
    out.extend_from_slice(&first);
    out.extend_from_slice(&second);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    Ok(out)
}

/// The pieces of `half`, in order, as raw deflate with their CRC-32; ended with a final
/// block if `last`, else with a sync flush so that another stream can follow.
fn deflate(half: &[Vec<u8>], last: bool) -> std::io::Result<(Vec<u8>, Crc)> {
    let mut crc = Crc::new();
    let size: usize = half.iter().map(Vec::len).sum();
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(size / 8), Compression::fast());
    for piece in half {
        crc.update(piece);
        encoder.write_all(piece)?;
    }
    let deflated = match last {
        true => encoder.finish()?,
        false => {
            encoder.flush()?;
            // Taken before the encoder is dropped, which appends a final block to what
            // is left (nothing).
            std::mem::take(encoder.get_mut())
        }
    };
    Ok((deflated, crc))
}

/// Whether `Accept-Encoding` accepts gzip (listed, and not with `q=0`).
pub(super) fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept_encoding: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_str(accept_encoding).expect("value"),
        );
        headers
    }

    /// What a standard single-member gzip reader makes of `gzipped`.
    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut text)
            .expect("valid gzip");
        text
    }

    #[test]
    fn parts_compressed_apart_make_one_gzip_stream_of_their_concatenation() {
        // Exposition-like text, and bytes that do not compress, in uneven splits.
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("ssl_cert_info{{name=\"n{i}\"}} 1\n").into_bytes())
            .collect();
        let noise: Vec<u8> = (0..100_000u64)
            .map(|i| (i.wrapping_mul(6364136223846793005).rotate_left(17) >> 56) as u8)
            .collect();
        for whole in [&text, &noise] {
            for split in [0, 1, whole.len() / 3, whole.len() - 1, whole.len()] {
                // The first half in two pieces, as the families come.
                let (first, second) = whole.split_at(split);
                let (first_a, first_b) = first.split_at(split / 2);
                let parts = [
                    vec![first_a.to_vec(), first_b.to_vec()],
                    vec![second.to_vec()],
                ];
                let gz = gzipped(&parts).expect("compress");
                assert_eq!(gunzip(&gz), *whole, "split at {split}");
            }
        }
        assert_eq!(gunzip(&gzipped(&[vec![], vec![]]).expect("empty")), b"");
        assert_eq!(
            gunzip(&gzipped(&[vec![vec![]], vec![vec![], vec![]]]).expect("empty")),
            b""
        );
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip(&headers("gzip")));
        assert!(accepts_gzip(&headers("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("identity, br")));
        assert!(!accepts_gzip(&http::HeaderMap::new()));
    }
}

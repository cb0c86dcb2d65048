use super::*;
use tokio::io::AsyncWriteExt;

/// Reads a response from `bytes`, delivered `per_read` bytes at a time, the connection
/// closing after them.
async fn read(bytes: &[u8], per_read: usize) -> Result<Response, ExchangeError> {
    let (mut endpoint, mut connection) = tokio::io::duplex(per_read);
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        // The reader may stop early (an error), which ends this write: that is fine.
        let _ = endpoint.write_all(&bytes).await;
    });
    let response = read_response(&mut connection).await;
    drop(connection);
    writer.await.unwrap();
    response
}

/// Every way of splitting `bytes` into reads gives `expected`.
async fn read_split(bytes: &[u8]) -> Result<Response, ExchangeError> {
    let whole = read(bytes, bytes.len().max(1)).await;
    for per_read in [1, 2, 3, 7] {
        let split = read(bytes, per_read).await;
        assert_eq!(
            format!("{split:?}"),
            format!("{whole:?}"),
            "{per_read} bytes a read"
        );
    }
    whole
}

#[tokio::test]
async fn a_body_with_a_length_is_read_and_the_connection_kept() {
    let response = read_split(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello")
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body, "hello");
    assert!(response.reusable);
}

#[tokio::test]
async fn a_chunked_body_is_joined_its_extensions_and_trailers_dropped() {
    let response = read_split(
        b"HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
          5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    assert_eq!(response.body, "hello world");
    assert!(response.reusable);
    let no_trailers =
        read_split(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
            .await
            .unwrap();
    assert_eq!(no_trailers.body, "ok");
    assert!(no_trailers.reusable);
}

#[tokio::test]
async fn chunked_wins_over_a_length() {
    let response = read_split(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(response.body, "ok");
}

#[tokio::test]
async fn a_body_without_framing_ends_with_the_connection() {
    let response = read_split(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        .await
        .unwrap();
    assert_eq!(response.body, "until the end");
    assert!(!response.reusable);
    let not_chunked = read_split(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw")
        .await
        .unwrap();
    assert_eq!(not_chunked.body, "raw");
    assert!(!not_chunked.reusable);
}

#[tokio::test]
async fn a_response_that_asks_to_close_or_is_http_1_0_is_not_reused() {
    for head in [
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n",
        "HTTP/1.0 200 OK\r\n",
    ] {
        let response = read_split(format!("{head}Content-Length: 2\r\n\r\nok").as_bytes())
            .await
            .unwrap();
        assert_eq!(response.body, "ok");
        assert!(!response.reusable, "{head}");
    }
}

#[tokio::test]
async fn bytes_after_the_response_make_the_connection_unusable() {
    let response = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 64)
        .await
        .unwrap();
    assert_eq!(response.body, "ok");
    assert!(!response.reusable);
}

#[tokio::test]
async fn interim_responses_are_skipped_and_no_content_has_no_body() {
    let response = read_split(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert!(response.body.is_empty());
    assert!(response.reusable);
}

#[tokio::test]
async fn results_over_the_limit_are_refused_whatever_their_framing() {
    let declared = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        MAX_RESULT_BYTES + 1
    );
    assert!(matches!(
        read(declared.as_bytes(), 1024).await,
        Err(ExchangeError::TooLarge)
    ));
    let huge = "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n";
    assert!(matches!(
        read(huge.as_bytes(), 1024).await,
        Err(ExchangeError::TooLarge)
    ));

    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..7 {
        chunked.extend_from_slice(b"100000\r\n");
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    assert!(matches!(
        read(&chunked, 64 * 1024).await,
        Err(ExchangeError::TooLarge)
    ));
    let giant_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
    assert!(matches!(
        read(giant_chunk, 1024).await,
        Err(ExchangeError::TooLarge)
    ));

    let mut unframed = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    unframed.resize(unframed.len() + MAX_RESULT_BYTES + 1, b'x');
    assert!(matches!(
        read(&unframed, 64 * 1024).await,
        Err(ExchangeError::TooLarge)
    ));
    unframed.pop();
    let at_the_limit = read(&unframed, 64 * 1024).await.unwrap();
    assert_eq!(at_the_limit.body.len(), MAX_RESULT_BYTES);
}

#[tokio::test]
async fn a_connection_that_ends_early_is_an_error() {
    for cut in [
        &b""[..],
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTrailer: x\r\n",
    ] {
        let result = read(cut, 3).await;
        assert!(
            matches!(result, Err(ExchangeError::Closed)),
            "{:?}: {result:?}",
            String::from_utf8_lossy(cut)
        );
    }
}

#[tokio::test]
async fn malformed_responses_are_errors() {
    let many_headers = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: y\r\n".repeat(65));
    let long_head = format!(
        "HTTP/1.1 200 OK\r\nX: {}\r\n\r\n",
        "y".repeat(2 * MAX_HEAD_BYTES)
    );
    for bad in [
        "garbage\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokay\r\n0\r\n\r\n",
        &many_headers,
        &long_head,
    ] {
        let result = read(bad.as_bytes(), 4096).await;
        assert!(
            matches!(result, Err(ExchangeError::Malformed(_))),
            "{:?}: {result:?}",
            &bad[..bad.len().min(80)]
        );
    }
}

#[tokio::test]
async fn the_request_is_written_with_its_length() {
    let expected =
        "POST /2015-03-31/functions/f/invocations HTTP/1.1\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
    let (mut endpoint, mut connection) = tokio::io::duplex(16);
    let answer = tokio::spawn(async move {
        let mut request = vec![0u8; expected.len()];
        tokio::io::AsyncReadExt::read_exact(&mut endpoint, &mut request)
            .await
            .unwrap();
        endpoint
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8(request).unwrap()
    });
    let head_start = b"POST /2015-03-31/functions/f/invocations HTTP/1.1\r\ncontent-length: ";
    let response = exchange(
        &mut connection,
        head_start,
        Bytes::from_static(b"{\"a\":1}"),
    )
    .await
    .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(answer.await.unwrap(), expected);
}

#[tokio::test]
async fn a_request_refused_before_its_first_byte_is_unsent() {
    let (endpoint, mut connection) = tokio::io::duplex(16);
    drop(endpoint);
    let result = exchange(&mut connection, b"POST / HTTP/1.1\r\n", Bytes::new()).await;
    assert!(
        matches!(result, Err(ExchangeError::Unsent(_))),
        "{result:?}"
    );
}

//! Streamed responses. An endpoint such as the Runtime Interface Emulator buffers a streaming
//! function's answer; lrp still makes the response the function described.

mod common;

use common::fake_rie::FakeRie;
use common::{Lrp, send};

#[tokio::test]
async fn an_endpoints_buffered_stream_becomes_the_response_its_prelude_describes() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start(&format!(
        "local:\n{}{}",
        fake.rule("streamed", "streamed", ""),
        fake.rule("streamed-rest", "streamed", "    event: rest\n")
    ));
    for host in ["streamed", "streamed-rest"] {
        let reply = send(lrp.request("GET", host, "/events"), "").await;
        assert_eq!(reply.status, 202, "{host}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("text/event-stream"));
        assert_eq!(reply.all("set-cookie"), ["s=1"]);
        assert_eq!(reply.text(), "data: one\n\ndata: two\n\n");
    }
}

//! The backend matrix: a test that runs its body against a fresh server on every
//! backend under test — SQLite always, PostgreSQL when `FERRY_TEST_POSTGRES_URL` is
//! set (see [`super::db::databases`]), each in its own database, dropped afterwards.

/// Defines one `#[tokio::test]` that runs `$body` once per backend, with a server
/// started on that backend's database and the `$extra` settings (a
/// `&[(&str, &str)]` of `FERRY_*` variables).
///
/// - `each_backend!(name, &[], |srv| { … })`: `srv` is the `TestServer`.
/// - `each_backend!(name, &[], |srv, api| { … })`: `api` is an `Api` (the REST
///   client of `common::http`) on that server.
/// - either form followed by `, then { … }`: a block run after the server has
///   stopped and its database was dropped, once per backend.
///
/// The server is stopped and the database dropped (its name printed as a
/// PostgreSQL run) after the body, for each backend in turn.
#[macro_export]
macro_rules! each_backend {
    ($name:ident, $extra:expr, |$srv:ident| $body:block $(, then $then:block)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for db in $crate::common::db::databases().await {
                let $srv = $crate::common::server::TestServer::start(db.url(), $extra).await;
                $body
                $srv.stop().await;
                db.finish(stringify!($name)).await;
                $($then)?
            }
        }
    };
    ($name:ident, $extra:expr, |$srv:ident, $api:ident| $body:block $(, then $then:block)?) => {
        $crate::each_backend!($name, $extra, |$srv| {
            let $api = $crate::common::http::Api::new(&$srv);
            $body
        } $(, then $then)?);
    };
}

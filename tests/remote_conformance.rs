//! The `Remote` conformance suite (`nimbus::remote::suite`) against
//! `HttpRemote` and the real server on a loopback port. The in-process and
//! faulty remotes run the same suite in their unit tests.

nimbus::remote_conformance_suite!(http, nimbus::remote::suite::HttpFixture::start());

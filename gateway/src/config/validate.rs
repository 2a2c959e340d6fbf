//! Checks that the configuration makes sense before anything starts.

use super::{Config, ConfigError};

fn invalid(option: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        message: message.into(),
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let up = &self.upstream;
        if up.endpoints.is_empty() {
            return Err(invalid(
                "upstream.endpoints",
                "at least one etcd endpoint is required",
            ));
        }
        for e in &up.endpoints {
            validate_endpoint(e)
                .map_err(|m| invalid("upstream.endpoints", format!("{e:?}: {m}")))?;
        }
        if up.connections_per_member == 0 || up.connections_per_member > 64 {
            return Err(invalid(
                "upstream.connections_per_member",
                "must be between 1 and 64",
            ));
        }
        if up.health_interval_ms < 10 {
            return Err(invalid(
                "upstream.health_interval_ms",
                "must be at least 10",
            ));
        }
        if up.dial_timeout_ms == 0 {
            return Err(invalid(
                "upstream.dial_timeout_ms",
                "must be greater than 0",
            ));
        }
        if up.discover_members && up.discover_interval_ms < 100 {
            return Err(invalid(
                "upstream.discover_interval_ms",
                "must be at least 100",
            ));
        }
        if self.mirror.prefixes.iter().any(String::is_empty) {
            return Err(invalid(
                "mirror.prefixes",
                "\"\" is not a prefix; leave the list empty to mirror the whole keyspace",
            ));
        }
        if self.mirror.page_size <= 0 {
            return Err(invalid("mirror.page_size", "must be greater than 0"));
        }
        if self.watch.progress_notify_interval_ms < 10 {
            return Err(invalid(
                "watch.progress_notify_interval_ms",
                "must be at least 10",
            ));
        }
        if self.metrics.prefix_depth > 0 && self.metrics.max_prefixes == 0 {
            return Err(invalid(
                "metrics.max_prefixes",
                "must be greater than 0 when metrics.prefix_depth is set",
            ));
        }
        let s = &self.server;
        for url in &s.advertise_client_urls {
            validate_endpoint(url)
                .map_err(|m| invalid("server.advertise_client_urls", format!("{url:?}: {m}")))?;
        }
        if s.max_request_bytes == 0 {
            return Err(invalid(
                "server.max_request_bytes",
                "must be greater than 0",
            ));
        }
        if s.max_concurrent_streams == 0 {
            return Err(invalid(
                "server.max_concurrent_streams",
                "must be greater than 0",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid(
                "log.format",
                format!("{:?}: expected \"text\" or \"json\"", self.log.format),
            ));
        }
        self.validate_tls()?;
        for plugin in &self.plugins.authorizers {
            let name = plugin.display_name();
            if plugin.path.is_empty() {
                return Err(invalid(
                    "plugins.authorizers.path",
                    format!("{name}: required"),
                ));
            }
            if !matches!(plugin.on_failure.as_str(), "deny" | "allow") {
                return Err(invalid(
                    "plugins.authorizers.on_failure",
                    format!(
                        "{name}: {:?}: expected \"deny\" or \"allow\"",
                        plugin.on_failure
                    ),
                ));
            }
            for (option, value) in [
                ("plugins.authorizers.memory_mib", plugin.memory_mib),
                ("plugins.authorizers.timeout_ms", plugin.timeout_ms),
                (
                    "plugins.authorizers.init_timeout_ms",
                    plugin.init_timeout_ms,
                ),
            ] {
                if value == 0 {
                    return Err(invalid(option, format!("{name}: must be greater than 0")));
                }
            }
        }
        let uncounted = &self.tenants.uncounted_writes;
        if !matches!(uncounted.as_str(), "allow" | "refuse") {
            return Err(invalid(
                "tenants.uncounted_writes",
                format!("{uncounted:?}: expected \"allow\" or \"refuse\""),
            ));
        }
        let audit = &self.plugins.audit;
        if !matches!(audit.on_full.as_str(), "block" | "drop") {
            return Err(invalid(
                "plugins.audit.on_full",
                format!("{:?}: expected \"block\" or \"drop\"", audit.on_full),
            ));
        }
        if audit.queue == 0 || audit.batch == 0 || audit.output.is_empty() {
            return Err(invalid(
                "plugins.audit.queue",
                "queue and batch must be greater than 0, and output not empty",
            ));
        }
        self.validate_tenants()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("{:?}: {e}", self.log.level)))?;
        Ok(())
    }
}

impl Config {
    fn validate_tenants(&self) -> Result<(), ConfigError> {
        let tenants = &self.tenants;
        let quotas = std::iter::once(("tenants.quota", &tenants.quota)).chain(
            tenants
                .namespaces
                .values()
                .map(|q| ("tenants.namespaces", q)),
        );
        for (option, quota) in quotas {
            let rate = quota.requests_per_second;
            if !rate.is_finite() || rate < 0.0 {
                return Err(invalid(
                    option,
                    format!("requests_per_second {rate}: must be 0 or more"),
                ));
            }
            if quota.limits_storage() && !self.mirror.enabled {
                return Err(invalid(
                    option,
                    "keys and bytes quotas are counted in the mirror: mirror.enabled must be true",
                ));
            }
        }
        if let Some(prefix) = tenants.namespaces.keys().find(|p| p.is_empty()) {
            return Err(invalid(
                "tenants.namespaces",
                format!("{prefix:?}: a namespace is a non-empty key prefix"),
            ));
        }
        self.validate_quota_coverage()
    }

    /// Storage quotas are counted in the mirror, so it must hold every namespace they apply to.
    fn validate_quota_coverage(&self) -> Result<(), ConfigError> {
        if self.mirror.prefixes.is_empty() {
            return Ok(());
        }
        let tenants = &self.tenants;
        if tenants.quota.limits_storage() {
            return Err(invalid(
                "tenants.quota",
                "keys and bytes quotas are counted in the mirror, which holds only \
                 mirror.prefixes: set them per namespace under tenants.namespaces",
            ));
        }
        let coverage = crate::mirror::Coverage::new(&self.mirror.prefixes);
        for (prefix, quota) in &tenants.namespaces {
            let end = crate::namespace::prefix_end(prefix.as_bytes());
            if quota.limits_storage() && !coverage.covers(prefix.as_bytes(), &end) {
                return Err(invalid(
                    "tenants.namespaces",
                    format!(
                        "{prefix:?}: its keys and bytes quotas are counted in the mirror, \
                         but mirror.prefixes does not hold this namespace"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn validate_endpoint(e: &str) -> Result<(), &'static str> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or("only http:// and https:// endpoints are supported")?;
    let uri: http::Uri = e.parse().map_err(|_| "not a valid URL")?;
    if uri.port_u16().is_none() || rest.contains('/') && !rest.ends_with('/') {
        return Err("expected http://host:port or https://host:port");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration as `Config::load` makes it from a file.
    fn loaded(toml: &str) -> Result<Config, String> {
        let mut config = Config::from_toml(toml)?;
        config.upstream.complete_endpoints();
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn err(toml: &str) -> String {
        loaded(toml).err().unwrap_or_default()
    }

    #[test]
    fn bare_endpoints_are_reached_as_etcdctl_reaches_them() {
        let plain = loaded("[upstream]\nendpoints = [\"127.0.0.1:1\", \"http://127.0.0.1:2\"]");
        let plain = plain.map(|c| c.upstream.endpoints);
        assert_eq!(
            plain,
            Ok(vec![
                "http://127.0.0.1:1".into(),
                "http://127.0.0.1:2".into()
            ])
        );
        let tls = "[upstream]\nendpoints = [\"etcd-0:2379\"]\n[upstream.tls]\nca_file = \"ca.pem\"";
        let tls = loaded(tls).map(|c| c.upstream.endpoints);
        assert_eq!(tls, Ok(vec!["https://etcd-0:2379".into()]));
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(err(""), "");
    }

    #[test]
    fn shipped_config_file_is_the_defaults() {
        let text = include_str!("../../../config.toml");
        let shipped = Config::from_toml(text).expect("config.toml parses");
        shipped.validate().expect("config.toml is valid");
        assert_eq!(format!("{shipped:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn errors_name_the_option() {
        assert!(err("[upstream]\nendpoints = []").contains("upstream.endpoints"));
        assert!(err("[server]\nadvertise_client_urls = [\"keygate:2379\"]")
            .contains("server.advertise_client_urls"));
        assert!(err("[upstream]\nendpoints = [\"unix:///run/etcd.sock\"]")
            .contains("upstream.endpoints"));
        assert!(err("[upstream]\nendpoints = [\"127.0.0.1\"]").contains("upstream.endpoints"));
        assert!(err("[upstream]\nconnections_per_member = 0")
            .contains("upstream.connections_per_member"));
        assert!(err("[log]\nformat = \"xml\"").contains("log.format"));
        assert!(err("[tenants]\nuncounted_writes = \"maybe\"").contains("tenants.uncounted_writes"));
        assert!(err("[server.tls]\nclient_auth = \"yes\"").contains("server.tls.client_auth"));
        assert!(err("[server.tls]\nmin_version = \"1.1\"").contains("server.tls.min_version"));
        assert!(err("[server.tls]\nkey_file = \"k.pem\"").contains("server.tls.cert_file"));
        assert!(err("[upstream]\nendpoints = [\"https://127.0.0.1:1\"]")
            .contains("upstream.tls.ca_file"));
        assert!(err("[server]\nlisten = \"nope\"").contains("listen"));
        assert!(err("[server]\nlisen = \"127.0.0.1:1\"").contains("lisen"));
        assert!(
            err("[mirror]\nenabled = false\n[tenants.namespaces.\"/a/\"]\nkeys = 1")
                .contains("tenants.namespaces")
        );
        assert!(err("[tenants.quota]\nrequests_per_second = -1.0").contains("tenants.quota"));
        assert!(err("[tenants.quota]\nwatchers = 1").contains("watchers"));
        assert!(err("[mirror]\nprefixes = [\"\"]").contains("mirror.prefixes"));
        assert!(
            err("[metrics]\nprefix_depth = 2\nmax_prefixes = 0").contains("metrics.max_prefixes")
        );
    }

    #[test]
    fn storage_quotas_need_their_namespace_mirrored() {
        let mirrored = "[mirror]\nprefixes = [\"/t/\"]\n";
        assert_eq!(
            err(&format!(
                "{mirrored}[tenants.namespaces.\"/t/a/\"]\nkeys = 1"
            )),
            ""
        );
        assert!(
            err(&format!("{mirrored}[tenants.namespaces.\"/u/\"]\nkeys = 1"))
                .contains("\"/u/\": its keys and bytes quotas")
        );
        assert!(err(&format!("{mirrored}[tenants.quota]\nbytes = 1")).contains("tenants.quota"));
        assert_eq!(
            err(&format!(
                "{mirrored}[tenants.namespaces.\"/u/\"]\nwatches = 1"
            )),
            "",
            "quotas not counted in the mirror apply anywhere"
        );
    }
}

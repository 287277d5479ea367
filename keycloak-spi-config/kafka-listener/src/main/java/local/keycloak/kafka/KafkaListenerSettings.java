package local.keycloak.kafka;

import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.Locale;
import java.util.Properties;
import java.util.Set;
import java.util.function.Function;
import java.util.stream.Collectors;

import org.keycloak.Config;

/**
 * Settings of the listener. Each value comes from the SPI config scope
 * ({@code --spi-events-listener--kafka--<option>}), then from an environment variable, then a default.
 */
final class KafkaListenerSettings {

    static final String OPT_BOOTSTRAP_SERVERS = "bootstrap-servers";
    static final String OPT_EVENTS_TOPIC = "events-topic";
    static final String OPT_ADMIN_EVENTS_TOPIC = "admin-events-topic";
    static final String OPT_CLIENT_ID = "client-id";
    static final String OPT_EVENT_TYPES = "event-types";
    static final String OPT_SECURITY_PROTOCOL = "security-protocol";
    static final String OPT_SASL_MECHANISM = "sasl-mechanism";
    static final String OPT_SASL_USERNAME = "sasl-username";
    static final String OPT_SSL_TRUSTSTORE_LOCATION = "ssl-truststore-location";
    static final String OPT_SSL_TRUSTSTORE_TYPE = "ssl-truststore-type";

    static final String ENV_BOOTSTRAP_SERVERS = "KAFKA_BOOTSTRAP_SERVERS";
    static final String ENV_EVENTS_TOPIC = "KAFKA_EVENTS_TOPIC";
    static final String ENV_ADMIN_EVENTS_TOPIC = "KAFKA_ADMIN_EVENTS_TOPIC";
    static final String ENV_CLIENT_ID = "KAFKA_CLIENT_ID";
    static final String ENV_EVENT_TYPES = "KAFKA_EVENT_TYPES";
    static final String ENV_SECURITY_PROTOCOL = "KAFKA_SECURITY_PROTOCOL";
    static final String ENV_SASL_MECHANISM = "KAFKA_SASL_MECHANISM";
    static final String ENV_SASL_USERNAME = "KAFKA_SASL_USERNAME";
    /** The SASL password is read from the environment only, so it is never on a command line or in a log. */
    static final String ENV_SASL_PASSWORD = "KAFKA_SASL_PASSWORD";
    static final String ENV_SSL_TRUSTSTORE_LOCATION = "KAFKA_SSL_TRUSTSTORE_LOCATION";
    static final String ENV_SSL_TRUSTSTORE_TYPE = "KAFKA_SSL_TRUSTSTORE_TYPE";

    static final String DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:9092";
    static final String DEFAULT_EVENTS_TOPIC = "keycloak.events";
    static final String DEFAULT_ADMIN_EVENTS_TOPIC = "keycloak.admin-events";
    static final String DEFAULT_CLIENT_ID = "keycloak";
    static final String DEFAULT_SECURITY_PROTOCOL = "PLAINTEXT";
    static final String DEFAULT_SSL_TRUSTSTORE_TYPE = "PEM";

    final String bootstrapServers;
    final String eventsTopic;
    final String adminEventsTopic;
    final String clientId;
    /** Upper-case user event type names to publish; empty means all. */
    final Set<String> eventTypes;
    /** PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. */
    final String securityProtocol;
    /** e.g. SCRAM-SHA-512; null: no SASL. */
    final String saslMechanism;
    final String saslUsername;
    final String saslPassword;
    /** A CA bundle (PEM by default) the brokers' certificates are checked against; null: the JVM's CAs. */
    final String sslTruststoreLocation;
    final String sslTruststoreType;

    private KafkaListenerSettings(String bootstrapServers, String eventsTopic, String adminEventsTopic,
                                  String clientId, Set<String> eventTypes, String securityProtocol,
                                  String saslMechanism, String saslUsername, String saslPassword,
                                  String sslTruststoreLocation, String sslTruststoreType) {
        this.bootstrapServers = bootstrapServers;
        this.eventsTopic = eventsTopic;
        this.adminEventsTopic = adminEventsTopic;
        this.clientId = clientId;
        this.eventTypes = eventTypes;
        this.securityProtocol = securityProtocol;
        this.saslMechanism = saslMechanism;
        this.saslUsername = saslUsername;
        this.saslPassword = saslPassword;
        this.sslTruststoreLocation = sslTruststoreLocation;
        this.sslTruststoreType = sslTruststoreType;
    }

    static KafkaListenerSettings from(Config.Scope scope) {
        return from(scope, System::getenv);
    }

    static KafkaListenerSettings from(Config.Scope scope, Function<String, String> env) {
        return new KafkaListenerSettings(
                resolve(scope, env, OPT_BOOTSTRAP_SERVERS, ENV_BOOTSTRAP_SERVERS, DEFAULT_BOOTSTRAP_SERVERS),
                resolve(scope, env, OPT_EVENTS_TOPIC, ENV_EVENTS_TOPIC, DEFAULT_EVENTS_TOPIC),
                resolve(scope, env, OPT_ADMIN_EVENTS_TOPIC, ENV_ADMIN_EVENTS_TOPIC, DEFAULT_ADMIN_EVENTS_TOPIC),
                resolve(scope, env, OPT_CLIENT_ID, ENV_CLIENT_ID, DEFAULT_CLIENT_ID),
                parseTypes(resolve(scope, env, OPT_EVENT_TYPES, ENV_EVENT_TYPES, "")),
                resolve(scope, env, OPT_SECURITY_PROTOCOL, ENV_SECURITY_PROTOCOL, DEFAULT_SECURITY_PROTOCOL)
                        .toUpperCase(Locale.ROOT),
                resolve(scope, env, OPT_SASL_MECHANISM, ENV_SASL_MECHANISM, null),
                resolve(scope, env, OPT_SASL_USERNAME, ENV_SASL_USERNAME, null),
                trimToNull(env.apply(ENV_SASL_PASSWORD)),
                resolve(scope, env, OPT_SSL_TRUSTSTORE_LOCATION, ENV_SSL_TRUSTSTORE_LOCATION, null),
                resolve(scope, env, OPT_SSL_TRUSTSTORE_TYPE, ENV_SSL_TRUSTSTORE_TYPE, DEFAULT_SSL_TRUSTSTORE_TYPE));
    }

    /** The producer's security settings (empty for PLAINTEXT without SASL). */
    Properties securityProperties() {
        Properties props = new Properties();
        props.put("security.protocol", securityProtocol);
        if (saslMechanism != null) {
            props.put("sasl.mechanism", saslMechanism);
            props.put("sasl.jaas.config", jaasConfig(saslMechanism, saslUsername, saslPassword));
        }
        if (sslTruststoreLocation != null) {
            props.put("ssl.truststore.location", sslTruststoreLocation);
            props.put("ssl.truststore.type", sslTruststoreType);
        }
        return props;
    }

    static String jaasConfig(String mechanism, String username, String password) {
        String module = mechanism.toUpperCase(Locale.ROOT).startsWith("SCRAM-")
                ? "org.apache.kafka.common.security.scram.ScramLoginModule"
                : "org.apache.kafka.common.security.plain.PlainLoginModule";
        return module + " required username=\"" + quoted(username) + "\" password=\"" + quoted(password) + "\";";
    }

    private static String quoted(String value) {
        return value == null ? "" : value.replace("\\", "\\\\").replace("\"", "\\\"");
    }

    boolean publishes(String eventType) {
        return eventTypes.isEmpty() || (eventType != null && eventTypes.contains(eventType.toUpperCase(Locale.ROOT)));
    }

    @Override
    public String toString() {
        return "bootstrapServers=" + bootstrapServers + ", eventsTopic=" + eventsTopic
                + ", adminEventsTopic=" + adminEventsTopic + ", clientId=" + clientId
                + ", eventTypes=" + (eventTypes.isEmpty() ? "(all)" : String.join(",", eventTypes))
                + ", securityProtocol=" + securityProtocol
                + (saslMechanism == null ? "" : ", saslMechanism=" + saslMechanism + ", saslUsername=" + saslUsername
                        + ", saslPassword=" + (saslPassword == null ? "(not set)" : "(set)"))
                + (sslTruststoreLocation == null ? "" : ", sslTruststore=" + sslTruststoreLocation
                        + " (" + sslTruststoreType + ")");
    }

    private static String resolve(Config.Scope scope, Function<String, String> env,
                                  String option, String envName, String fallback) {
        String value = null;
        if (scope != null) {
            // Keycloak 26 maps --spi-events-listener--kafka--bootstrap-servers to the scope key; depending on the
            // config source it answers to the camelCase or the dashed spelling, so ask for both.
            value = trimToNull(safeGet(scope, camelCase(option)));
            if (value == null) {
                value = trimToNull(safeGet(scope, option));
            }
        }
        if (value == null) {
            value = trimToNull(env.apply(envName));
        }
        return value == null ? fallback : value;
    }

    private static String safeGet(Config.Scope scope, String key) {
        try {
            return scope.get(key);
        } catch (RuntimeException e) {
            return null;
        }
    }

    static String camelCase(String dashed) {
        StringBuilder out = new StringBuilder(dashed.length());
        boolean upper = false;
        for (char c : dashed.toCharArray()) {
            if (c == '-') {
                upper = true;
            } else {
                out.append(upper ? Character.toUpperCase(c) : c);
                upper = false;
            }
        }
        return out.toString();
    }

    static Set<String> parseTypes(String csv) {
        if (csv == null || csv.isBlank()) {
            return Collections.emptySet();
        }
        Set<String> types = Arrays.stream(csv.split(","))
                .map(String::trim)
                .filter(s -> !s.isEmpty())
                .map(s -> s.toUpperCase(Locale.ROOT))
                .collect(Collectors.toCollection(LinkedHashSet::new));
        return Collections.unmodifiableSet(types);
    }

    private static String trimToNull(String s) {
        if (s == null) {
            return null;
        }
        String t = s.trim();
        return t.isEmpty() ? null : t;
    }
}

package local.keycloak.kafka;

import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.Locale;
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

    static final String ENV_BOOTSTRAP_SERVERS = "KAFKA_BOOTSTRAP_SERVERS";
    static final String ENV_EVENTS_TOPIC = "KAFKA_EVENTS_TOPIC";
    static final String ENV_ADMIN_EVENTS_TOPIC = "KAFKA_ADMIN_EVENTS_TOPIC";
    static final String ENV_CLIENT_ID = "KAFKA_CLIENT_ID";
    static final String ENV_EVENT_TYPES = "KAFKA_EVENT_TYPES";

    static final String DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:9092";
    static final String DEFAULT_EVENTS_TOPIC = "keycloak.events";
    static final String DEFAULT_ADMIN_EVENTS_TOPIC = "keycloak.admin-events";
    static final String DEFAULT_CLIENT_ID = "keycloak";

    final String bootstrapServers;
    final String eventsTopic;
    final String adminEventsTopic;
    final String clientId;
    /** Upper-case user event type names to publish; empty means all. */
    final Set<String> eventTypes;

    private KafkaListenerSettings(String bootstrapServers, String eventsTopic, String adminEventsTopic,
                                  String clientId, Set<String> eventTypes) {
        this.bootstrapServers = bootstrapServers;
        this.eventsTopic = eventsTopic;
        this.adminEventsTopic = adminEventsTopic;
        this.clientId = clientId;
        this.eventTypes = eventTypes;
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
                parseTypes(resolve(scope, env, OPT_EVENT_TYPES, ENV_EVENT_TYPES, "")));
    }

    boolean publishes(String eventType) {
        return eventTypes.isEmpty() || (eventType != null && eventTypes.contains(eventType.toUpperCase(Locale.ROOT)));
    }

    @Override
    public String toString() {
        return "bootstrapServers=" + bootstrapServers + ", eventsTopic=" + eventsTopic
                + ", adminEventsTopic=" + adminEventsTopic + ", clientId=" + clientId
                + ", eventTypes=" + (eventTypes.isEmpty() ? "(all)" : String.join(",", eventTypes));
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

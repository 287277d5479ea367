package local.keycloak.kafka;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import java.util.Set;

import org.junit.jupiter.api.Test;
import org.keycloak.Config;

class KafkaListenerTest {

    @Test
    void recordKeyIsTheUserIdOfUserResourcePaths() {
        assertEquals("abc", KafkaEventListenerProvider.userIdFromResourcePath("users/abc"));
        assertEquals("abc", KafkaEventListenerProvider.userIdFromResourcePath("users/abc/groups/g1"));
        assertEquals("abc", KafkaEventListenerProvider.userIdFromResourcePath("users/abc/role-mappings/realm"));
        assertNull(KafkaEventListenerProvider.userIdFromResourcePath("groups/g1"));
        assertNull(KafkaEventListenerProvider.userIdFromResourcePath("users/"));
        assertNull(KafkaEventListenerProvider.userIdFromResourcePath(null));
    }

    @Test
    void everyRecordSaysItWasPublishedAfterCommit() {
        var record = KafkaPublisher.record("keycloak.events", "abc", "{}");
        var header = record.headers().lastHeader("x-published");
        assertEquals("after-commit", new String(header.value(), java.nio.charset.StandardCharsets.UTF_8));
        assertEquals("abc", record.key());
    }

    @Test
    void defaultsApplyWithoutScopeOrEnv() {
        KafkaListenerSettings s = KafkaListenerSettings.from(scope(Map.of()), name -> null);
        assertEquals("127.0.0.1:9092", s.bootstrapServers);
        assertEquals("keycloak.events", s.eventsTopic);
        assertEquals("keycloak.admin-events", s.adminEventsTopic);
        assertEquals("keycloak", s.clientId);
        assertTrue(s.eventTypes.isEmpty());
        assertTrue(s.publishes("LOGIN"));
    }

    @Test
    void scopeWinsOverEnvAndBothSpellingsAreRead() {
        Map<String, String> env = Map.of("KAFKA_BOOTSTRAP_SERVERS", "env:1", "KAFKA_EVENTS_TOPIC", "env.events",
                "KAFKA_CLIENT_ID", "env-client");
        KafkaListenerSettings s = KafkaListenerSettings.from(
                scope(Map.of("bootstrapServers", "camel:1", "events-topic", "dashed.events")), env::get);
        assertEquals("camel:1", s.bootstrapServers);
        assertEquals("dashed.events", s.eventsTopic);
        assertEquals("env-client", s.clientId);
        assertEquals("keycloak.admin-events", s.adminEventsTopic);
    }

    @Test
    void eventTypeFilter() {
        KafkaListenerSettings s = KafkaListenerSettings.from(scope(Map.of()),
                Map.of("KAFKA_EVENT_TYPES", " register, update_profile ,,")::get);
        assertEquals(Set.of("REGISTER", "UPDATE_PROFILE"), s.eventTypes);
        assertTrue(s.publishes("REGISTER"));
        assertFalse(s.publishes("LOGIN"));
        assertFalse(s.publishes(null));
    }

    @Test
    void saslSslProducerSettingsKeepThePasswordOutOfToString() {
        KafkaListenerSettings s = KafkaListenerSettings.from(
                scope(Map.of("security-protocol", "sasl_ssl", "saslMechanism", "SCRAM-SHA-512",
                        "sasl-username", "keycloak", "ssl-truststore-location", "/tls/ca.pem")),
                Map.of("KAFKA_SASL_PASSWORD", "pa\"ss")::get);
        var props = s.securityProperties();
        assertEquals("SASL_SSL", props.get("security.protocol"));
        assertEquals("SCRAM-SHA-512", props.get("sasl.mechanism"));
        assertEquals("org.apache.kafka.common.security.scram.ScramLoginModule required username=\"keycloak\""
                + " password=\"pa\\\"ss\";", props.get("sasl.jaas.config"));
        assertEquals("/tls/ca.pem", props.get("ssl.truststore.location"));
        assertEquals("PEM", props.get("ssl.truststore.type"));
        assertFalse(s.toString().contains("pa\"ss"));
        assertTrue(s.toString().contains("saslPassword=(set)"));
    }

    @Test
    void plaintextByDefault() {
        var props = KafkaListenerSettings.from(scope(Map.of()), name -> null).securityProperties();
        assertEquals(Map.of("security.protocol", "PLAINTEXT"), Map.copyOf(props));
    }

    private static Config.Scope scope(Map<String, String> values) {
        return new Config.Scope() {
            @Override public String get(String key) { return values.get(key); }
            @Override public String get(String key, String def) { return values.getOrDefault(key, def); }
            @Override public String[] getArray(String key) { return null; }
            @Override public Integer getInt(String key, Integer def) { return def; }
            @Override public Long getLong(String key, Long def) { return def; }
            @Override public Boolean getBoolean(String key, Boolean def) { return def; }
            @Override public Config.Scope scope(String... scope) { return this; }
            @Override public Set<String> getPropertyNames() { return values.keySet(); }
            @Override public Config.Scope root() { return this; }
        };
    }
}

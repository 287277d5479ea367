package local.keycloak.kafka;

import java.util.List;

import org.jboss.logging.Logger;
import org.keycloak.Config;
import org.keycloak.events.EventListenerProvider;
import org.keycloak.events.EventListenerProviderFactory;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;
import org.keycloak.provider.ProviderConfigProperty;
import org.keycloak.provider.ProviderConfigurationBuilder;

/** Event listener {@code kafka}: publishes user events and admin events to Kafka as Keycloak's own JSON. */
public class KafkaEventListenerProviderFactory implements EventListenerProviderFactory {

    public static final String ID = "kafka";

    private static final Logger LOG = Logger.getLogger(KafkaEventListenerProviderFactory.class);

    private volatile KafkaListenerSettings settings;
    private volatile KafkaPublisher publisher;

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public void init(Config.Scope config) {
        settings = KafkaListenerSettings.from(config);
        publisher = new KafkaPublisher(settings);
        LOG.infof("Kafka event listener configured (%s)", settings);
    }

    @Override
    public void postInit(KeycloakSessionFactory factory) {
        // the producer is created on the first event, so a Kafka outage cannot fail Keycloak's startup
    }

    @Override
    public EventListenerProvider create(KeycloakSession session) {
        return new KafkaEventListenerProvider(session, settings, publisher);
    }

    @Override
    public void close() {
        KafkaPublisher p = publisher;
        if (p != null) {
            p.close();
        }
    }

    @Override
    public List<ProviderConfigProperty> getConfigMetadata() {
        return ProviderConfigurationBuilder.create()
                .property().name(KafkaListenerSettings.OPT_BOOTSTRAP_SERVERS).type("string")
                .helpText("Kafka bootstrap servers (env " + KafkaListenerSettings.ENV_BOOTSTRAP_SERVERS + ").")
                .defaultValue(KafkaListenerSettings.DEFAULT_BOOTSTRAP_SERVERS).add()
                .property().name(KafkaListenerSettings.OPT_EVENTS_TOPIC).type("string")
                .helpText("Topic for user events (env " + KafkaListenerSettings.ENV_EVENTS_TOPIC + ").")
                .defaultValue(KafkaListenerSettings.DEFAULT_EVENTS_TOPIC).add()
                .property().name(KafkaListenerSettings.OPT_ADMIN_EVENTS_TOPIC).type("string")
                .helpText("Topic for admin events (env " + KafkaListenerSettings.ENV_ADMIN_EVENTS_TOPIC + ").")
                .defaultValue(KafkaListenerSettings.DEFAULT_ADMIN_EVENTS_TOPIC).add()
                .property().name(KafkaListenerSettings.OPT_CLIENT_ID).type("string")
                .helpText("Kafka client.id (env " + KafkaListenerSettings.ENV_CLIENT_ID + ").")
                .defaultValue(KafkaListenerSettings.DEFAULT_CLIENT_ID).add()
                .property().name(KafkaListenerSettings.OPT_EVENT_TYPES).type("string")
                .helpText("Comma list of user event types to publish, empty for all (env "
                        + KafkaListenerSettings.ENV_EVENT_TYPES + ").")
                .add()
                .property().name(KafkaListenerSettings.OPT_SECURITY_PROTOCOL).type("string")
                .helpText("PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (env "
                        + KafkaListenerSettings.ENV_SECURITY_PROTOCOL + ").")
                .defaultValue(KafkaListenerSettings.DEFAULT_SECURITY_PROTOCOL).add()
                .property().name(KafkaListenerSettings.OPT_SASL_MECHANISM).type("string")
                .helpText("SASL mechanism, e.g. SCRAM-SHA-512 (env " + KafkaListenerSettings.ENV_SASL_MECHANISM
                        + "); the password is read from env " + KafkaListenerSettings.ENV_SASL_PASSWORD + " only.")
                .add()
                .property().name(KafkaListenerSettings.OPT_SASL_USERNAME).type("string")
                .helpText("SASL user name (env " + KafkaListenerSettings.ENV_SASL_USERNAME + ").")
                .add()
                .property().name(KafkaListenerSettings.OPT_SSL_TRUSTSTORE_LOCATION).type("string")
                .helpText("CA bundle the brokers' certificates are checked against (env "
                        + KafkaListenerSettings.ENV_SSL_TRUSTSTORE_LOCATION + ").")
                .add()
                .property().name(KafkaListenerSettings.OPT_SSL_TRUSTSTORE_TYPE).type("string")
                .helpText("PEM, PKCS12 or JKS (env " + KafkaListenerSettings.ENV_SSL_TRUSTSTORE_TYPE + ").")
                .defaultValue(KafkaListenerSettings.DEFAULT_SSL_TRUSTSTORE_TYPE).add()
                .build();
    }
}

package local.keycloak.kafka;

import java.util.ArrayList;
import java.util.List;

import org.jboss.logging.Logger;
import org.keycloak.events.Event;
import org.keycloak.events.EventListenerProvider;
import org.keycloak.events.admin.AdminEvent;
import org.keycloak.models.AbstractKeycloakTransaction;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakTransactionManager;
import org.keycloak.util.JsonSerialization;

/**
 * One instance per Keycloak session. Events are serialised at once (Keycloak's own Event / AdminEvent JSON) and
 * handed to the publisher after the session's transaction commits; if it rolls back they are dropped. If no
 * transaction is active, they are handed over immediately.
 */
public class KafkaEventListenerProvider implements EventListenerProvider {

    private static final Logger LOG = Logger.getLogger(KafkaEventListenerProvider.class);

    private final KeycloakSession session;
    private final KafkaListenerSettings settings;
    private final KafkaPublisher publisher;
    private final List<Pending> pending = new ArrayList<>();
    private boolean enlisted;

    KafkaEventListenerProvider(KeycloakSession session, KafkaListenerSettings settings, KafkaPublisher publisher) {
        this.session = session;
        this.settings = settings;
        this.publisher = publisher;
    }

    @Override
    public void onEvent(Event event) {
        try {
            if (event == null || !settings.publishes(event.getType() == null ? null : event.getType().name())) {
                return;
            }
            String json = JsonSerialization.writeValueAsString(event);
            queue(new Pending(settings.eventsTopic, event.getUserId(), json));
        } catch (Exception e) {
            LOG.errorf(e, "Kafka listener: could not handle event %s", event == null ? null : event.getType());
        }
    }

    @Override
    public void onEvent(AdminEvent event, boolean includeRepresentation) {
        try {
            if (event == null) {
                return;
            }
            AdminEvent toSend = event;
            if (!includeRepresentation && event.getRepresentation() != null) {
                toSend = new AdminEvent(event);
                toSend.setRepresentation(null);
            }
            String json = JsonSerialization.writeValueAsString(toSend);
            queue(new Pending(settings.adminEventsTopic, userIdFromResourcePath(event.getResourcePath()), json));
        } catch (Exception e) {
            LOG.errorf(e, "Kafka listener: could not handle admin event %s %s",
                    event == null ? null : event.getOperationType(), event == null ? null : event.getResourcePath());
        }
    }

    /** {@code users/{id}} or {@code users/{id}/...} gives {@code id}; anything else gives null. */
    static String userIdFromResourcePath(String resourcePath) {
        if (resourcePath == null || !resourcePath.startsWith("users/")) {
            return null;
        }
        String rest = resourcePath.substring("users/".length());
        int slash = rest.indexOf('/');
        String id = slash < 0 ? rest : rest.substring(0, slash);
        return id.isEmpty() ? null : id;
    }

    private void queue(Pending record) {
        KeycloakTransactionManager tm = session == null ? null : session.getTransactionManager();
        if (tm == null || !tm.isActive()) {
            LOG.debugf("Kafka listener: no active transaction, publishing to %s now (key %s)", record.topic, record.key);
            publisher.publish(record.topic, record.key, record.value);
            return;
        }
        LOG.debugf("Kafka listener: event for %s (key %s) deferred until the transaction commits", record.topic,
                record.key);
        synchronized (pending) {
            pending.add(record);
            if (!enlisted) {
                enlisted = true;
                tm.enlistAfterCompletion(new AfterCompletion());
            }
        }
    }

    @Override
    public void close() {
        // nothing: records are released by the after-completion transaction
    }

    private final class AfterCompletion extends AbstractKeycloakTransaction {
        @Override
        protected void commitImpl() {
            List<Pending> batch = drain();
            LOG.debugf("Kafka listener: transaction committed, publishing %d event(s)", batch.size());
            for (Pending p : batch) {
                publisher.publish(p.topic, p.key, p.value);
            }
        }

        @Override
        protected void rollbackImpl() {
            List<Pending> batch = drain();
            if (!batch.isEmpty()) {
                LOG.debugf("Kafka listener: transaction rolled back, %d event(s) not published", batch.size());
            }
        }

        private List<Pending> drain() {
            synchronized (pending) {
                List<Pending> batch = new ArrayList<>(pending);
                pending.clear();
                enlisted = false;
                return batch;
            }
        }
    }

    private record Pending(String topic, String key, String value) {
    }
}

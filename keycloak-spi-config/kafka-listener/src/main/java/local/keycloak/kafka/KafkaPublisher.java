package local.keycloak.kafka;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.StringSerializer;
import org.jboss.logging.Logger;

/**
 * Owns the one Kafka producer of the factory. The producer is created lazily on the first record (so Keycloak
 * starts, and logs nothing about Kafka, while no event has been sent) and records are handed to a single
 * background thread so a Kafka outage never blocks a Keycloak request thread. Nothing here throws.
 */
final class KafkaPublisher {

    private static final Logger LOG = Logger.getLogger(KafkaPublisher.class);

    /**
     * Every record says it was published after its transaction committed (or outside any transaction): a
     * consumer that reads the user right after the event sees the change, so it needs no follow-up re-check.
     */
    static final String PUBLISHED_HEADER = "x-published";
    static final String AFTER_COMMIT = "after-commit";

    static final int QUEUE_CAPACITY = 10_000;
    static final int MAX_BLOCK_MS = 10_000;

    private final KafkaListenerSettings settings;
    private final ThreadPoolExecutor executor;
    private final Object lock = new Object();
    private volatile Producer<String, String> producer;
    private volatile boolean closed;

    KafkaPublisher(KafkaListenerSettings settings) {
        this.settings = settings;
        this.executor = new ThreadPoolExecutor(1, 1, 0L, TimeUnit.MILLISECONDS,
                new ArrayBlockingQueue<>(QUEUE_CAPACITY), r -> {
                    Thread t = new Thread(r, "keycloak-kafka-listener");
                    t.setDaemon(true);
                    return t;
                });
    }

    /** Queues one record; returns at once. */
    void publish(String topic, String key, String value) {
        if (closed) {
            LOG.warnf("Kafka listener closed, dropping event for topic %s (key %s)", topic, key);
            return;
        }
        try {
            executor.execute(() -> send(topic, key, value));
        } catch (RejectedExecutionException e) {
            LOG.errorf("Kafka listener queue full (%d), dropping event for topic %s (key %s)",
                    QUEUE_CAPACITY, topic, key);
        }
    }

    private void send(String topic, String key, String value) {
        Producer<String, String> p = producer();
        if (p == null) {
            LOG.errorf("Kafka producer unavailable, dropping event for topic %s (key %s)", topic, key);
            return;
        }
        try {
            p.send(record(topic, key, value), (metadata, error) -> {
                if (error != null) {
                    LOG.errorf(error, "Failed to publish event to Kafka topic %s (key %s)", topic, key);
                } else if (LOG.isTraceEnabled()) {
                    LOG.tracef("Published event to %s-%d@%d", metadata.topic(), metadata.partition(),
                            metadata.offset());
                }
            });
        } catch (RuntimeException e) {
            // e.g. TimeoutException after max.block.ms when the brokers are unreachable
            LOG.errorf(e, "Failed to publish event to Kafka topic %s (key %s)", topic, key);
        }
    }

    static ProducerRecord<String, String> record(String topic, String key, String value) {
        List<Header> headers =
                List.of(new RecordHeader(PUBLISHED_HEADER, AFTER_COMMIT.getBytes(StandardCharsets.UTF_8)));
        return new ProducerRecord<>(topic, null, key, value, headers);
    }

    private Producer<String, String> producer() {
        Producer<String, String> p = producer;
        if (p != null || closed) {
            return p;
        }
        synchronized (lock) {
            if (producer == null && !closed) {
                producer = createProducer();
            }
            return producer;
        }
    }

    private Producer<String, String> createProducer() {
        Properties props = settings.securityProperties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, settings.bootstrapServers);
        props.put(ProducerConfig.CLIENT_ID_CONFIG, settings.clientId);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, String.valueOf(MAX_BLOCK_MS));
        // Kafka resolves some classes by name through the context class loader; make that our jar's loader.
        Thread current = Thread.currentThread();
        ClassLoader previous = current.getContextClassLoader();
        current.setContextClassLoader(KafkaPublisher.class.getClassLoader());
        try {
            KafkaProducer<String, String> created =
                    new KafkaProducer<>(props, new StringSerializer(), new StringSerializer());
            LOG.infof("Kafka event listener producer created (%s)", settings);
            return created;
        } catch (RuntimeException e) {
            // e.g. no resolvable bootstrap address; try again on the next event
            LOG.errorf(e, "Could not create Kafka producer (%s)", settings);
            return null;
        } finally {
            current.setContextClassLoader(previous);
        }
    }

    void close() {
        closed = true;
        executor.shutdown();
        try {
            if (!executor.awaitTermination(MAX_BLOCK_MS + 2_000L, TimeUnit.MILLISECONDS)) {
                LOG.warnf("Kafka listener: %d queued events not sent at shutdown", executor.getQueue().size());
                executor.shutdownNow();
            }
        } catch (InterruptedException e) {
            executor.shutdownNow();
            Thread.currentThread().interrupt();
        }
        synchronized (lock) {
            if (producer != null) {
                try {
                    producer.close(Duration.ofSeconds(5));
                } catch (RuntimeException e) {
                    LOG.warn("Error closing Kafka producer", e);
                }
                producer = null;
            }
        }
    }
}

// Placeholder translation unit: the Kafka fanout and mirror (issue 5) will live in this module.
namespace ferry::cross_region {}

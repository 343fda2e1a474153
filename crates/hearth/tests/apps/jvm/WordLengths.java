package org.example;

import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;

/** A JVM Spark application: counts the rows of a range and sums it. */
public class WordLengths {
    public static void main(String[] args) {
        long n = args.length > 0 ? Long.parseLong(args[0]) : 1000;
        SparkSession spark = SparkSession.builder().appName("jvm-app").getOrCreate();
        Dataset<Row> df = spark.range(n).toDF("id");
        long sum = df.selectExpr("sum(id) as s").first().getLong(0);
        System.out.println("jvm app: n=" + n + " sum=" + sum);
        spark.stop();
    }
}

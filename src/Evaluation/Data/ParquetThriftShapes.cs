using static QLoraNet.Evaluation.Data.ThriftType;

namespace QLoraNet.Evaluation.Data;

/// <summary>
/// The Thrift structs of a Parquet footer and page header (apache/parquet-format src/main/thrift/parquet.thrift), as
/// the Parquet.Net we read them with (6.1.0, Directory.Packages.props) reads them: each field its generated reader
/// (src/Parquet/Meta/Parquet.cs) knows, with the type it reads there. Enums are i32s. These must be exactly its
/// fields: one it knows and we do not could be read as another type than we checked, and one we know and it does not
/// is skipped by its faulty skip (see <see cref="ThriftCompactWalker"/>). Re-check them when upgrading Parquet.Net.
/// Fields of parquet.thrift that Parquet.Net 6.1.0 does not know (Statistics.nan_count, ColumnOrder's
/// IEEE_754_TOTAL_ORDER, LogicalType FILE, ...) are absent on purpose: it skips them.
/// </summary>
internal static class ParquetThriftShapes
{
    static ThriftShape Empty(string name) => new(name);

    static readonly ThriftShape Statistics = new ThriftShape("Statistics")
        .Field(1, "max", Binary).Field(2, "min", Binary).Field(3, "null_count", I64).Field(4, "distinct_count", I64)
        .Field(5, "max_value", Binary).Field(6, "min_value", Binary).Field(7, "is_max_value_exact", True).Field(8, "is_min_value_exact", True);

    static readonly ThriftShape TimeUnit = new ThriftShape("TimeUnit")
        .Field(1, "MILLIS", Struct, Empty("MilliSeconds")).Field(2, "MICROS", Struct, Empty("MicroSeconds"))
        .Field(3, "NANOS", Struct, Empty("NanoSeconds"));

    static readonly ThriftShape LogicalType = new ThriftShape("LogicalType")
        .Field(1, "STRING", Struct, Empty("StringType")).Field(2, "MAP", Struct, Empty("MapType"))
        .Field(3, "LIST", Struct, Empty("ListType")).Field(4, "ENUM", Struct, Empty("EnumType"))
        .Field(5, "DECIMAL", Struct, new ThriftShape("DecimalType").Field(1, "scale", I32).Field(2, "precision", I32))
        .Field(6, "DATE", Struct, Empty("DateType"))
        .Field(7, "TIME", Struct, new ThriftShape("TimeType").Field(1, "isAdjustedToUTC", True).Field(2, "unit", Struct, TimeUnit))
        .Field(8, "TIMESTAMP", Struct, new ThriftShape("TimestampType").Field(1, "isAdjustedToUTC", True).Field(2, "unit", Struct, TimeUnit))
        .Field(10, "INTEGER", Struct, new ThriftShape("IntType").Field(1, "bitWidth", I8).Field(2, "isSigned", True))
        .Field(11, "UNKNOWN", Struct, Empty("NullType")).Field(12, "JSON", Struct, Empty("JsonType"))
        .Field(13, "BSON", Struct, Empty("BsonType")).Field(14, "UUID", Struct, Empty("UUIDType"))
        .Field(15, "FLOAT16", Struct, Empty("Float16Type"))
        .Field(16, "VARIANT", Struct, new ThriftShape("VariantType").Field(1, "specification_version", I8))
        .Field(17, "GEOMETRY", Struct, new ThriftShape("GeometryType").Field(1, "crs", Binary))
        .Field(18, "GEOGRAPHY", Struct, new ThriftShape("GeographyType").Field(1, "crs", Binary).Field(2, "algorithm", I32));

    public static readonly ThriftShape SchemaElement = new ThriftShape("SchemaElement")
        .Field(1, "type", I32).Field(2, "type_length", I32).Field(3, "repetition_type", I32).Field(4, "name", Binary)
        .Field(5, "num_children", I32).Field(6, "converted_type", I32).Field(7, "scale", I32).Field(8, "precision", I32)
        .Field(9, "field_id", I32).Field(10, "logicalType", Struct, LogicalType);

    static readonly ThriftShape KeyValue = new ThriftShape("KeyValue").Field(1, "key", Binary).Field(2, "value", Binary);

    public static readonly ThriftShape ColumnMetaData = new ThriftShape("ColumnMetaData")
        .Field(1, "type", I32).List(2, "encodings", I32).List(3, "path_in_schema", Binary).Field(4, "codec", I32)
        .Field(5, "num_values", I64).Field(6, "total_uncompressed_size", I64).Field(7, "total_compressed_size", I64)
        .List(8, "key_value_metadata", Struct, KeyValue).Field(9, "data_page_offset", I64).Field(10, "index_page_offset", I64)
        .Field(11, "dictionary_page_offset", I64).Field(12, "statistics", Struct, Statistics)
        .List(13, "encoding_stats", Struct, new ThriftShape("PageEncodingStats").Field(1, "page_type", I32).Field(2, "encoding", I32).Field(3, "count", I32))
        .Field(14, "bloom_filter_offset", I64).Field(15, "bloom_filter_length", I32)
        .Field(16, "size_statistics", Struct, new ThriftShape("SizeStatistics")
            .Field(1, "unencoded_byte_array_data_bytes", I64).List(2, "repetition_level_histogram", I64).List(3, "definition_level_histogram", I64))
        .Field(17, "geospatial_statistics", Struct, new ThriftShape("GeospatialStatistics")
            .Field(1, "bbox", Struct, new ThriftShape("BoundingBox").Field(1, "xmin", ThriftType.Double).Field(2, "xmax", ThriftType.Double).Field(3, "ymin", ThriftType.Double)
                .Field(4, "ymax", ThriftType.Double).Field(5, "zmin", ThriftType.Double).Field(6, "zmax", ThriftType.Double).Field(7, "mmin", ThriftType.Double).Field(8, "mmax", ThriftType.Double))
            .List(2, "geospatial_types", I32));

    public static readonly ThriftShape ColumnChunk = new ThriftShape("ColumnChunk")
        .Field(1, "file_path", Binary).Field(2, "file_offset", I64).Field(3, "meta_data", Struct, ColumnMetaData)
        .Field(4, "offset_index_offset", I64).Field(5, "offset_index_length", I32).Field(6, "column_index_offset", I64)
        .Field(7, "column_index_length", I32)
        .Field(8, "crypto_metadata", Struct, new ThriftShape("ColumnCryptoMetaData")
            .Field(1, "ENCRYPTION_WITH_FOOTER_KEY", Struct, Empty("EncryptionWithFooterKey"))
            .Field(2, "ENCRYPTION_WITH_COLUMN_KEY", Struct, new ThriftShape("EncryptionWithColumnKey").List(1, "path_in_schema", Binary).Field(2, "key_metadata", Binary)))
        .Field(9, "encrypted_column_metadata", Binary);

    public static readonly ThriftShape RowGroup = new ThriftShape("RowGroup")
        .List(1, "columns", Struct, ColumnChunk).Field(2, "total_byte_size", I64).Field(3, "num_rows", I64)
        .List(4, "sorting_columns", Struct, new ThriftShape("SortingColumn").Field(1, "column_idx", I32).Field(2, "descending", True).Field(3, "nulls_first", True))
        .Field(5, "file_offset", I64).Field(6, "total_compressed_size", I64).Field(7, "ordinal", I16);

    static ThriftShape Aes(string name) =>
        new ThriftShape(name).Field(1, "aad_prefix", Binary).Field(2, "aad_file_unique", Binary).Field(3, "supply_aad_prefix", True);

    public static readonly ThriftShape FileMetaData = new ThriftShape("FileMetaData")
        .Field(1, "version", I32).List(2, "schema", Struct, SchemaElement).Field(3, "num_rows", I64).List(4, "row_groups", Struct, RowGroup)
        .List(5, "key_value_metadata", Struct, KeyValue).Field(6, "created_by", Binary)
        .List(7, "column_orders", Struct, new ThriftShape("ColumnOrder").Field(1, "TYPE_ORDER", Struct, Empty("TypeDefinedOrder")))
        .Field(8, "encryption_algorithm", Struct, new ThriftShape("EncryptionAlgorithm").Field(1, "AES_GCM_V1", Struct, Aes("AesGcmV1")).Field(2, "AES_GCM_CTR_V1", Struct, Aes("AesGcmCtrV1")))
        .Field(9, "footer_signing_key_metadata", Binary);

    public static readonly ThriftShape DataPageHeader = new ThriftShape("DataPageHeader")
        .Field(1, "num_values", I32).Field(2, "encoding", I32).Field(3, "definition_level_encoding", I32)
        .Field(4, "repetition_level_encoding", I32).Field(5, "statistics", Struct, Statistics);

    public static readonly ThriftShape DictionaryPageHeader = new ThriftShape("DictionaryPageHeader")
        .Field(1, "num_values", I32).Field(2, "encoding", I32).Field(3, "is_sorted", True);

    public static readonly ThriftShape DataPageHeaderV2 = new ThriftShape("DataPageHeaderV2")
        .Field(1, "num_values", I32).Field(2, "num_nulls", I32).Field(3, "num_rows", I32).Field(4, "encoding", I32)
        .Field(5, "definition_levels_byte_length", I32).Field(6, "repetition_levels_byte_length", I32)
        .Field(7, "is_compressed", True).Field(8, "statistics", Struct, Statistics);

    public static readonly ThriftShape PageHeader = new ThriftShape("PageHeader")
        .Field(1, "type", I32).Field(2, "uncompressed_page_size", I32).Field(3, "compressed_page_size", I32).Field(4, "crc", I32)
        .Field(5, "data_page_header", Struct, DataPageHeader).Field(6, "index_page_header", Struct, Empty("IndexPageHeader"))
        .Field(7, "dictionary_page_header", Struct, DictionaryPageHeader).Field(8, "data_page_header_v2", Struct, DataPageHeaderV2);
}
